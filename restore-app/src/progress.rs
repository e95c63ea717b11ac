//! The one printer of download progress, shared by `bin/restore` and `sluice backup verify`:
//! a bar with bytes, rate, ETA and the current file on a terminal; one log line a file
//! otherwise, so that output collected from a pipe stays readable.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use sluice_backup_store::FileEntry;

use crate::Progress;

/// Prints the progress of a restore or a verification on standard error.
pub struct Printer {
    /// What was done to each file, first word of its line: `restored`, `verified`.
    verb: &'static str,
    /// Where lines go when there is no bar (standard error unless a test asks otherwise).
    lines: Box<dyn Write + Send>,
    /// Whether to draw a bar rather than write lines (standard error is a terminal).
    terminal: bool,
    bar: Option<indicatif::ProgressBar>,
    files_total: u64,
    bytes_total: u64,
    files_done: u64,
    bytes_done: u64,
    started: Instant,
}

impl Printer {
    /// A printer whose lines start with `verb`; a bar when standard error is a terminal.
    pub fn new(verb: &'static str) -> Printer {
        let terminal = std::io::stderr().is_terminal();
        Printer::with_lines(verb, Box::new(std::io::stderr()), terminal)
    }

    /// A printer writing its lines to `lines`, or drawing a bar (on standard error) if `terminal`.
    pub fn with_lines(verb: &'static str, lines: Box<dyn Write + Send>, terminal: bool) -> Printer {
        Printer {
            verb,
            lines,
            terminal,
            bar: None,
            files_total: 0,
            bytes_total: 0,
            files_done: 0,
            bytes_done: 0,
            started: Instant::now(),
        }
    }

    /// The line of one finished file: where it belongs, how far along the whole is, the rate so
    /// far and the time left at that rate.
    fn line(&self, partition: u32, entry: &FileEntry) -> String {
        let elapsed_s = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate_bytes_per_s = self.bytes_done as f64 / elapsed_s;
        let eta_s = if rate_bytes_per_s > 0.0 {
            self.bytes_total.saturating_sub(self.bytes_done) as f64 / rate_bytes_per_s
        } else {
            0.0
        };
        format!(
            "{} partition={partition} file={} size_bytes={} files={}/{} bytes={}/{} rate_mib_per_s={:.1} eta_s={eta_s:.0}",
            self.verb,
            entry.name,
            entry.size_bytes,
            self.files_done,
            self.files_total,
            self.bytes_done,
            self.bytes_total,
            rate_bytes_per_s / (1024.0 * 1024.0),
        )
    }
}

impl Progress for Printer {
    fn start(&mut self, files: u64, bytes: u64) {
        self.files_total = files;
        self.bytes_total = bytes;
        self.files_done = 0;
        self.bytes_done = 0;
        self.started = Instant::now();
        self.bar = self.terminal.then(|| {
            let bar = indicatif::ProgressBar::new(bytes);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
                )
                .expect("valid template"),
            );
            bar
        });
    }

    fn file_done(&mut self, partition: u32, entry: &FileEntry) {
        self.files_done += 1;
        self.bytes_done += entry.size_bytes;
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.bytes_done);
                bar.set_message(format!(
                    "file {}/{} partition {partition} {}",
                    self.files_done, self.files_total, entry.name
                ));
            }
            None => {
                let line = self.line(partition, entry);
                // Progress is advice: a closed standard error must not fail the restore.
                let _ = writeln!(self.lines, "{line}");
            }
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let _ = self.lines.flush();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use sluice_backup_store::FileKind;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn entry(name: &str, size_bytes: u64) -> FileEntry {
        FileEntry {
            name: name.to_string(),
            kind: FileKind::Segment,
            size_bytes,
            checksum: "crc32c:00000000".to_string(),
            compression: None,
            stored_bytes: size_bytes,
            pieces: None,
        }
    }

    /// Without a terminal: one line a file, starting with the verb, counting files and bytes.
    #[test]
    fn without_a_terminal_each_file_is_a_line() {
        // (verb, files as (partition, name, bytes), the fragments each line must hold)
        type Case<'a> = (&'static str, Vec<(u32, &'a str, u64)>, Vec<Vec<&'a str>>);
        let cases: Vec<Case> = vec![
            (
                "restored",
                vec![(1, "a.log", 10), (2, "state.rkyv", 30)],
                vec![
                    vec![
                        "restored partition=1 file=a.log size_bytes=10 ",
                        "files=1/2 bytes=10/40 ",
                    ],
                    vec![
                        "restored partition=2 file=state.rkyv size_bytes=30 ",
                        "files=2/2 bytes=40/40 ",
                        "eta_s=0",
                    ],
                ],
            ),
            (
                "verified",
                vec![(3, "b.log", 0)],
                vec![vec![
                    "verified partition=3 file=b.log size_bytes=0 ",
                    "files=1/1 bytes=0/0 ",
                ]],
            ),
        ];
        for (verb, files, expected) in cases {
            let lines = Shared::default();
            let mut printer = Printer::with_lines(verb, Box::new(lines.clone()), false);
            let bytes: u64 = files.iter().map(|(_, _, size)| size).sum();
            printer.start(files.len() as u64, bytes);
            for (partition, name, size) in &files {
                printer.file_done(*partition, &entry(name, *size));
            }
            printer.finish();
            let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
            let printed: Vec<&str> = text.lines().collect();
            assert_eq!(printed.len(), expected.len(), "{verb}: {text}");
            for (line, fragments) in printed.iter().zip(&expected) {
                for fragment in fragments {
                    assert!(
                        line.contains(fragment),
                        "{verb}: {fragment:?} not in {line:?}"
                    );
                }
            }
        }
    }

    /// On a terminal the bar shows the progress and no line is written.
    #[test]
    fn on_a_terminal_a_bar_and_no_lines() {
        let lines = Shared::default();
        let mut printer = Printer::with_lines("verified", Box::new(lines.clone()), true);
        printer.start(2, 50);
        printer.file_done(1, &entry("a.log", 20));
        let bar = printer.bar.clone().expect("a bar on a terminal");
        assert_eq!(bar.position(), 20);
        assert_eq!(bar.message(), "file 1/2 partition 1 a.log");
        printer.finish();
        assert!(bar.is_finished());
        assert!(lines.0.lock().unwrap().is_empty(), "no lines beside a bar");
    }
}
