# Sourced by the launchers in bin/: `launch <binary> <args>` runs target/release/<binary>, first
# building the release binaries of the workspace (`cargo build --release --workspace --bins`, the
# build scripts/test.sh makes) whenever the binary is missing or any source file of the tree
# (*.rs, Cargo.toml, Cargo.lock, under the workspace's crates) is newer than it. So a pulled or
# edited tree never runs stale code, and an up-to-date one starts at once. (The mtime check
# rather than an unconditional `cargo build`: `cargo test` builds the binaries with its own
# feature set, and a launcher run from a test must not rebuild them all with another.)
# The current directory is kept: relative paths (config/application.yaml, data directories)
# resolve against the caller's.

launch() {
    local bin_name="$1"
    shift
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    local bin="$root/target/release/$bin_name"
    if [ ! -x "$bin" ] || [ -n "$(cd "$root" && find . -path ./target -prune -o \
        \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock \) -newer "$bin" -print -quit)" ]; then
        echo "building the release binaries (cargo build --release --workspace --bins)..." >&2
        if ! (cd "$root" && cargo build --release --quiet --workspace --bins); then
            echo "error: cargo build --release --workspace --bins failed (needed for $bin_name)" >&2
            exit 1
        fi
        # cargo leaves a binary whose crate did not change as it was (older than the edited
        # source): mark it checked, or every later run would build again.
        touch "$bin"
    fi
    exec "$bin" "$@"
}
