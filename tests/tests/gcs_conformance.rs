//! The backup store's conformance suite against Google Cloud Storage, emulated by
//! fake-gcs-server (`scripts/gcs-emulator-start.sh`; install it with
//! `scripts/install-emulators.sh`). The store is opened through the same code path as Google's
//! service: `StoreKind::Gcs` with a bucket and a custom API host (no credentials: no OAuth token
//! is sent).
//!
//! # What the emulator cannot do, and what this test does about it
//!
//! object_store's GCS client speaks the GCS **XML API**. fake-gcs-server (1.54) serves its
//! listing (`GET /<bucket>?list-type=2`), object `GET`/`HEAD` (ranges included) and `DELETE`, but
//! not its two ways of writing: `PUT /<bucket>/<object>` (Put Object) is taken for a signed-URL
//! upload and refused with `400 invalid uploadType`, and the XML multipart upload
//! (`POST …?uploads`) is refused the same way (upstream: fsouza/fake-gcs-server issues #331
//! "Consider XML support for object PUT/GET" and #852 "Support XML Multipart uploads?", both
//! open; the XML API pull request #1164 is not merged). It also ignores `ifGenerationMatch` and
//! `If-Match` (verified), so conditional writes are not atomic on it (like Garage): the suite's
//! sequential second-writer checks still hold through the store's look-before-write.
//!
//! So the test first asserts that the emulator still refuses the client's XML writes (and says
//! so on stdout); then it runs the whole conformance suite with every read, `HEAD`, ranged
//! `GET`, listing and delete going through the store's own GCS client, and only the writes
//! (`put` and multipart uploads) sent through the emulator's JSON upload API instead
//! ([`JsonApiWrites`]). Not covered here: object_store's XML `PUT` and XML multipart requests
//! themselves. When the emulator learns them the first assertion fails, telling to drop the
//! shim and run the suite on the store as opened.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_backup_store::conformance::{Intercept, Intercepted, StoreFuture};
use sluice_backup_store::object_store::{
    self, path::Path, MultipartUpload, ObjectStore, PutMode, PutMultipartOptions, PutOptions,
    PutPayload, PutResult,
};
use sluice_backup_store::{BackupStore, BackupStoreOptions, StoreKind};
use sluice_tests::Emulator;

fn start_gcs_emulator() -> Emulator {
    Emulator::start(
        "gcs-emulator-start.sh",
        "fake-gcs-server.log",
        &[
            "SLUICE_BROKER_DATA_BACKUP_STORE",
            "SLUICE_BROKER_DATA_BACKUP_GCS_HOST",
            "SLUICE_BROKER_DATA_BACKUP_GCS_BUCKETNAME",
        ],
    )
}

fn store_on(emulator: &Emulator, base_path: Option<String>) -> BackupStore {
    assert_eq!(emulator.setting("SLUICE_BROKER_DATA_BACKUP_STORE"), "GCS");
    BackupStore::open(BackupStoreOptions::new(
        StoreKind::Gcs {
            bucket: emulator.setting("SLUICE_BROKER_DATA_BACKUP_GCS_BUCKETNAME"),
            host: Some(emulator.setting("SLUICE_BROKER_DATA_BACKUP_GCS_HOST")),
            credentials: None,
        },
        base_path,
    ))
    .expect("open the GCS backup store")
}

/// The emulator's limitation, asserted: object_store's XML `PUT` and XML multipart upload are
/// refused (`400 invalid uploadType`). Printed, so that the run says what is not covered.
async fn assert_xml_writes_refused(store: &BackupStore) {
    let probe = Path::from("conformance-xml-api-probe");
    let put = store
        .object_store()
        .put(&probe, PutPayload::from_static(b"probe"))
        .await;
    let multipart = store.object_store().put_multipart(&probe).await;
    match (&put, &multipart) {
        (Err(put), Err(multipart))
            if put.to_string().contains("invalid uploadType")
                && multipart.to_string().contains("invalid uploadType") =>
        {
            println!(
                "gcs_conformance: fake-gcs-server refuses object_store's XML API writes \
                 (Put Object and XML multipart upload: 400 invalid uploadType; \
                 fsouza/fake-gcs-server#331, #852), so the suite's writes go through the \
                 emulator's JSON upload API; reads, HEAD, ranged GET, listings and deletes go \
                 through the store's GCS client. Not covered: the XML PUT and multipart requests."
            );
        }
        _ => panic!(
            "fake-gcs-server no longer refuses object_store's XML writes as expected \
             (put: {:?}; multipart: {:?}). If it now supports them, remove the JsonApiWrites \
             shim from tests/tests/gcs_conformance.rs and run the suite on the store as opened.",
            put.as_ref().map(|_| "ok").map_err(ToString::to_string),
            multipart
                .as_ref()
                .map(|_| "ok")
                .map_err(ToString::to_string)
        ),
    }
    // Nothing may be left behind (a put that landed after all would show here).
    let _ = store.object_store().delete(&probe).await;
}

async fn conforms(base_path: Option<String>) {
    let emulator = start_gcs_emulator();
    let store = store_on(&emulator, base_path.clone());
    store.check_reachable().await.unwrap_or_else(|e| {
        panic!(
            "fake-gcs-server is not reachable: {e}\n{}",
            emulator.log_tail()
        )
    });
    assert_xml_writes_refused(&store).await;
    let writes = JsonApiWrites {
        inner: store.object_store().clone(),
        client: reqwest::Client::new(),
        host: emulator.setting("SLUICE_BROKER_DATA_BACKUP_GCS_HOST"),
        bucket: emulator.setting("SLUICE_BROKER_DATA_BACKUP_GCS_BUCKETNAME"),
    };
    let store = BackupStore::from_object_store(Arc::new(Intercepted(writes)), base_path);
    sluice_backup_store::conformance::conformance(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcs_store_conforms() {
    conforms(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcs_store_conforms_below_a_base_path() {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    conforms(Some(format!("/cluster-a/run-{nanos}/"))).await;
}

// ---------------------------------------------------------------------------------------------
// The write shim
// ---------------------------------------------------------------------------------------------

/// The store's own GCS client for everything but writes; `put` and multipart uploads go to the
/// emulator's JSON API (`POST /upload/storage/v1/b/<bucket>/o?uploadType=media`), with
/// `ifGenerationMatch` for conditional puts (which fake-gcs-server ignores). A multipart upload
/// is buffered and sent as one upload when completed.
#[derive(Debug)]
struct JsonApiWrites {
    inner: Arc<dyn ObjectStore>,
    client: reqwest::Client,
    host: String,
    bucket: String,
}

impl fmt::Display for JsonApiWrites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonApiWrites({})", self.inner)
    }
}

fn generic(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> object_store::Error {
    object_store::Error::Generic {
        store: "JsonApiWrites",
        source: source.into(),
    }
}

/// Uploads `body` as object `location` through the JSON API.
async fn json_upload(
    client: reqwest::Client,
    url: String,
    location: Path,
    body: Vec<u8>,
    mode: PutMode,
) -> object_store::Result<PutResult> {
    let mut query = vec![
        ("uploadType", "media".to_string()),
        ("name", location.to_string()),
    ];
    match &mode {
        PutMode::Overwrite => {}
        PutMode::Create => query.push(("ifGenerationMatch", "0".to_string())),
        PutMode::Update(version) => {
            let generation = version
                .version
                .clone()
                .ok_or_else(|| generic("a conditional update needs the generation"))?;
            query.push(("ifGenerationMatch", generation));
        }
    }
    let response = client
        .post(url)
        .query(&query)
        .header("Content-Type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .map_err(generic)?;
    let status = response.status();
    let text = response.text().await.map_err(generic)?;
    let path = location.to_string();
    match status.as_u16() {
        200 | 201 => {}
        404 => {
            return Err(object_store::Error::NotFound {
                path,
                source: text.into(),
            })
        }
        412 if matches!(mode, PutMode::Create) => {
            return Err(object_store::Error::AlreadyExists {
                path,
                source: text.into(),
            })
        }
        412 => {
            return Err(object_store::Error::Precondition {
                path,
                source: text.into(),
            })
        }
        _ => return Err(generic(format!("upload {path}: HTTP {status}: {text}"))),
    }
    let object: serde_json::Value = serde_json::from_str(&text).map_err(generic)?;
    Ok(PutResult {
        // The XML API's ETag header is quoted; so is what the store's HEAD requests see.
        e_tag: object["etag"].as_str().map(|e| format!("\"{e}\"")),
        version: object["generation"].as_str().map(str::to_string),
    })
}

impl JsonApiWrites {
    fn upload_url(&self) -> String {
        format!(
            "{}/upload/storage/v1/b/{}/o",
            self.host.trim_end_matches('/'),
            self.bucket
        )
    }
}

#[derive(Debug)]
struct BufferedUpload {
    client: reqwest::Client,
    url: String,
    location: Path,
    parts: Vec<PutPayload>,
}

impl MultipartUpload for BufferedUpload {
    fn put_part(&mut self, data: PutPayload) -> object_store::UploadPart {
        self.parts.push(data);
        Box::pin(async { Ok(()) })
    }

    fn complete<'a, 'b>(&'a mut self) -> StoreFuture<'b, PutResult>
    where
        'a: 'b,
        Self: 'b,
    {
        let mut body = Vec::new();
        for part in self.parts.drain(..) {
            for chunk in &part {
                body.extend_from_slice(chunk);
            }
        }
        Box::pin(json_upload(
            self.client.clone(),
            self.url.clone(),
            self.location.clone(),
            body,
            PutMode::Overwrite,
        ))
    }

    fn abort<'a, 'b>(&'a mut self) -> StoreFuture<'b, ()>
    where
        'a: 'b,
        Self: 'b,
    {
        self.parts.clear();
        Box::pin(async { Ok(()) })
    }
}

impl Intercept for JsonApiWrites {
    fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    fn put_opts<'a>(
        &'a self,
        location: &'a Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> StoreFuture<'a, PutResult> {
        let mut body = Vec::with_capacity(payload.content_length());
        for chunk in &payload {
            body.extend_from_slice(chunk);
        }
        Box::pin(json_upload(
            self.client.clone(),
            self.upload_url(),
            location.clone(),
            body,
            opts.mode,
        ))
    }

    fn put_multipart_opts<'a>(
        &'a self,
        location: &'a Path,
        _opts: PutMultipartOptions,
    ) -> StoreFuture<'a, Box<dyn MultipartUpload>> {
        let upload = BufferedUpload {
            client: self.client.clone(),
            url: self.upload_url(),
            location: location.clone(),
            parts: Vec::new(),
        };
        Box::pin(async move { Ok(Box::new(upload) as Box<dyn MultipartUpload>) })
    }
}
