//! Property test of the pool's reference safety: random sequences of backups (completed, failed,
//! or left IN_PROGRESS by a crash), deletes, retention, restarts and collections, on one
//! partition's pool, as its one writer does them (the broker serializes them with the pool lock).
//!
//! Files may also be archived between backups (continuous backups: sealed log segments uploaded
//! before a manifest lists them), the writer holding their pieces until a COMPLETED backup
//! lists them; a restart forgets them and archives the same files again, which sends nothing.
//!
//! After every step: no COMPLETED backup references a missing object (and each one downloads
//! intact at the end). After every collection: the pool holds exactly the objects some manifest
//! references or the writer holds, nothing else. The files grow from backup to backup like log segments (each
//! backup keeps the pieces of the bytes an earlier one sent) and some are equal across files,
//! so objects are shared between backups and within one.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path as LocalPath;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::memory::InMemory;
use proptest::prelude::*;
use sluice_backup_store::{
    BackupDescriptor, BackupIdentifier, BackupStatus, BackupStore, Chunking, FileEntry, FileKind,
    Manifest, ObjectId, PoolIndex, PooledUpload, PrefixTrust,
};

const PARTITION: u32 = 1;

#[derive(Debug, Clone)]
enum Ending {
    Completed,
    Failed,
    /// The writer died mid-backup: its manifest stays IN_PROGRESS until a restart.
    Crashed,
}

#[derive(Debug, Clone)]
enum Step {
    /// A backup of the files after appending `appends[i]` blocks to file `i` (block ids pick
    /// from a small set, so contents repeat).
    Backup {
        appends: Vec<Vec<u8>>,
        ending: Ending,
    },
    /// Deletes the `nth` backup in the store (modulo their number).
    Delete {
        nth: usize,
    },
    /// Retention: deletes every COMPLETED or FAILED backup but the newest `keep`.
    Retain {
        keep: usize,
    },
    /// Archives the files after these appends: uploads them, no manifest lists them yet.
    Archive {
        appends: Vec<Vec<u8>>,
    },
    /// A restart: every IN_PROGRESS manifest is marked FAILED (as the broker does); what was
    /// archived is forgotten and archived again before any collection (as the broker does).
    Restart,
    Collect,
}

fn step() -> impl Strategy<Value = Step> {
    let ending = prop_oneof![
        3 => Just(Ending::Completed),
        1 => Just(Ending::Failed),
        1 => Just(Ending::Crashed),
    ];
    prop_oneof![
        4 => (prop::collection::vec(prop::collection::vec(0u8..4, 0..3), 1..4), ending)
            .prop_map(|(appends, ending)| Step::Backup { appends, ending }),
        2 => (0usize..8).prop_map(|nth| Step::Delete { nth }),
        1 => (0usize..3).prop_map(|keep| Step::Retain { keep }),
        2 => prop::collection::vec(prop::collection::vec(0u8..4, 0..3), 1..4)
            .prop_map(|appends| Step::Archive { appends }),
        1 => Just(Step::Restart),
        2 => Just(Step::Collect),
    ]
}

/// A block of file content: 1 KiB made of its id.
fn block(id: u8) -> Vec<u8> {
    (0..1024u32)
        .map(|i| id.wrapping_mul(31).wrapping_add((i % 251) as u8))
        .collect()
}

struct Writer {
    store: BackupStore,
    index: PoolIndex,
    dir: tempfile::TempDir,
    /// Current content of each file (they only grow).
    files: Vec<Vec<u8>>,
    /// The previous COMPLETED backup's entries, by file name (trusted: this writer cut them).
    previous: BTreeMap<String, FileEntry>,
    /// Files archived since, by name: no manifest lists them, the writer holds their pieces.
    archived: BTreeMap<String, FileEntry>,
    next_checkpoint: u64,
}

impl Writer {
    async fn new() -> Self {
        let store = BackupStore::from_object_store(Arc::new(InMemory::new()), None);
        let index = store.load_pool_index(PARTITION).await.unwrap();
        Self {
            store,
            index,
            dir: tempfile::tempdir().unwrap(),
            files: Vec::new(),
            previous: BTreeMap::new(),
            archived: BTreeMap::new(),
            next_checkpoint: 1,
        }
    }

    fn descriptor() -> BackupDescriptor {
        BackupDescriptor {
            snapshot_id: None,
            checkpoint_position: 1,
            number_of_partitions: 1,
            broker_version: "test".to_string(),
            request: None,
        }
    }

    /// Appends `appends[i]` blocks to file `i`.
    fn append(&mut self, appends: &[Vec<u8>]) {
        for (index, blocks) in appends.iter().enumerate() {
            if self.files.len() <= index {
                self.files.push(Vec::new());
            }
            for id in blocks {
                self.files[index].extend(block(*id));
            }
        }
    }

    /// Uploads every file into the pool, building on the newest entry of each (archived or
    /// backed up).
    async fn upload_files(&self) -> Vec<FileEntry> {
        let mut entries = Vec::new();
        for (index, content) in self.files.iter().enumerate() {
            if content.is_empty() {
                continue;
            }
            let name = format!("{index:020}.log");
            let previous = [self.archived.get(&name), self.previous.get(&name)]
                .into_iter()
                .flatten()
                .max_by_key(|e| e.size_bytes)
                .cloned();
            let length = content.len() as u64;
            let previous = previous.map(|e| (e, PrefixTrust::Trusted));
            entries.push(self.upload_file(index, length, previous).await.0);
        }
        entries
    }

    /// Uploads the first `length` bytes of file `index`; its entry and the objects sent.
    async fn upload_file(
        &self,
        index: usize,
        length: u64,
        previous: Option<(FileEntry, PrefixTrust)>,
    ) -> (FileEntry, u64) {
        let name = format!("{index:020}.log");
        let path = self.dir.path().join(&name);
        std::fs::write(&path, &self.files[index]).unwrap();
        let upload = PooledUpload {
            partition_id: PARTITION,
            kind: FileKind::Segment,
            name: &name,
            local_path: LocalPath::new(&path),
            length,
            chunking: Chunking::Fixed,
            previous: previous.as_ref().map(|(e, trust)| (e, *trust)),
            keys: None,
        };
        let pooled = self
            .store
            .upload_pooled(upload, &self.index, None)
            .await
            .unwrap();
        (pooled.entry, pooled.uploaded.objects)
    }

    async fn backup(&mut self, appends: &[Vec<u8>], ending: &Ending) {
        let id = BackupIdentifier::new(PARTITION, self.next_checkpoint, 0);
        self.next_checkpoint += 1;
        let manifest = Manifest::in_progress(id, Self::descriptor());
        self.store.write_manifest(&manifest).await.unwrap();
        self.append(appends);
        let entries = self.upload_files().await;
        match ending {
            Ending::Completed => {
                let completed = manifest.complete(entries.clone());
                self.store.write_manifest(&completed).await.unwrap();
                // What a COMPLETED manifest lists is held by the manifest from here.
                for entry in &entries {
                    if self.archived.get(&entry.name) == Some(entry) {
                        self.archived.remove(&entry.name);
                    }
                }
                self.previous = entries.into_iter().map(|e| (e.name.clone(), e)).collect();
            }
            Ending::Failed => {
                self.store
                    .write_manifest(&manifest.fail("upload failed"))
                    .await
                    .unwrap();
            }
            Ending::Crashed => {}
        }
    }

    async fn archive(&mut self, appends: &[Vec<u8>]) {
        self.append(appends);
        let entries = self.upload_files().await;
        self.archived = entries.into_iter().map(|e| (e.name.clone(), e)).collect();
    }

    /// The pieces the writer holds for a manifest to come.
    fn held(&self) -> HashSet<ObjectId> {
        self.archived
            .values()
            .flat_map(|e| e.pieces.iter().flatten())
            .map(|p| p.object)
            .collect()
    }

    async fn manifests(&self) -> Vec<Manifest> {
        let listing = self
            .store
            .list_manifests_reporting(PARTITION)
            .await
            .unwrap();
        assert!(listing.skipped.is_empty(), "{:?}", listing.skipped);
        listing.manifests
    }

    async fn delete(&self, id: BackupIdentifier) {
        self.store.delete_backup(&id).await.unwrap();
    }

    async fn pool_objects(&self) -> BTreeSet<ObjectId> {
        let prefix = self.store.pool_prefix(PARTITION);
        let metas: Vec<_> = self
            .store
            .object_store()
            .list(Some(&prefix))
            .try_collect()
            .await
            .unwrap();
        metas
            .iter()
            .map(|meta| ObjectId::parse(meta.location.filename().unwrap()).expect("a pool object"))
            .collect()
    }

    async fn check_completed_backups_are_whole(&self) {
        let objects = self.pool_objects().await;
        for manifest in self.manifests().await {
            if manifest.status != BackupStatus::Completed {
                continue;
            }
            for piece in manifest.pieces() {
                assert!(
                    objects.contains(&piece.object),
                    "COMPLETED backup {} references missing object {}",
                    manifest.id,
                    piece.object
                );
            }
        }
    }

    async fn check_pool_is_exactly_what_is_referenced(&self) {
        let mut referenced: BTreeSet<ObjectId> = self
            .manifests()
            .await
            .iter()
            .flat_map(Manifest::pieces)
            .map(|p| p.object)
            .collect();
        referenced.extend(self.held());
        assert_eq!(self.pool_objects().await, referenced, "after a collection");
    }

    async fn run(&mut self, step: &Step) {
        match step {
            Step::Backup { appends, ending } => self.backup(appends, ending).await,
            Step::Delete { nth } => {
                let manifests = self.manifests().await;
                if !manifests.is_empty() {
                    self.delete(manifests[nth % manifests.len()].id).await;
                }
            }
            Step::Retain { keep } => {
                let finished: Vec<Manifest> = self
                    .manifests()
                    .await
                    .into_iter()
                    .filter(|m| m.status != BackupStatus::InProgress)
                    .collect();
                let doomed = finished.len().saturating_sub(*keep);
                for manifest in &finished[..doomed] {
                    self.delete(manifest.id).await;
                }
            }
            Step::Archive { appends } => self.archive(appends).await,
            Step::Restart => {
                for manifest in self.manifests().await {
                    if manifest.status == BackupStatus::InProgress {
                        let failed = manifest.fail("restarted");
                        self.store.write_manifest(&failed).await.unwrap();
                    }
                }
                self.restart_archive().await;
            }
            Step::Collect => {
                self.store
                    .collect_pool(PARTITION, &self.index, &self.held())
                    .await
                    .unwrap();
                self.check_pool_is_exactly_what_is_referenced().await;
            }
        }
        self.check_completed_backups_are_whole().await;
    }

    /// After a restart: the archived entries are gone with the process but for their records
    /// (the broker keeps one on disk per archived segment), and the same prefixes are archived
    /// again from the records, each piece checked against the file, with a new index (the pool's
    /// listing): no object is sent. (From nothing it would send: a file is cut where the earlier
    /// entries it grew from ended, not at fixed offsets.)
    async fn restart_archive(&mut self) {
        let archived = std::mem::take(&mut self.archived);
        self.previous.clear();
        self.index = self.store.load_pool_index(PARTITION).await.unwrap();
        for (name, entry) in archived {
            let index: usize = name.trim_end_matches(".log").parse().unwrap();
            let record = Some((entry.clone(), PrefixTrust::Check));
            let (again, objects_sent) = self.upload_file(index, entry.size_bytes, record).await;
            assert_eq!(
                objects_sent, 0,
                "archiving {name} again after a restart sent objects"
            );
            assert_eq!(again, entry);
            self.archived.insert(name, again);
        }
    }

    /// Every COMPLETED backup downloads intact, file by file.
    async fn check_completed_backups_download(&self) {
        let scratch = tempfile::tempdir().unwrap();
        for manifest in self.manifests().await {
            if manifest.status != BackupStatus::Completed {
                continue;
            }
            for (n, entry) in manifest.files.iter().enumerate() {
                let destination = scratch
                    .path()
                    .join(format!("{}-{n}", manifest.id.checkpoint_id));
                self.store
                    .download_file(&manifest, entry, &destination)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", manifest.id));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn collections_never_free_what_a_backup_needs_and_free_everything_else(
        steps in prop::collection::vec(step(), 1..14)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let mut writer = Writer::new().await;
            for step in &steps {
                writer.run(step).await;
            }
            writer.run(&Step::Collect).await;
            writer.check_completed_backups_download().await;
        });
    }
}

/// The property fails when a collection ignores a kind of manifest: here, a backup whose
/// objects a later backup reuses stays whole only because collection reads every manifest.
/// A deterministic case of the above that a collection keeping only the newest backup's
/// objects would fail.
#[tokio::test]
async fn an_object_shared_by_two_backups_outlives_the_delete_of_one() {
    let mut writer = Writer::new().await;
    writer.backup(&[vec![0, 1]], &Ending::Completed).await;
    writer.backup(&[vec![2]], &Ending::Completed).await;
    let manifests = writer.manifests().await;
    let shared = manifests[0].files[0].pieces.as_ref().unwrap()[0].object;
    assert_eq!(
        manifests[1].files[0].pieces.as_ref().unwrap()[0].object,
        shared
    );
    writer.delete(manifests[1].id).await;
    writer.run(&Step::Collect).await;
    assert!(writer.pool_objects().await.contains(&shared));
    writer.delete(manifests[0].id).await;
    writer.run(&Step::Collect).await;
    assert!(writer.pool_objects().await.is_empty());
}
