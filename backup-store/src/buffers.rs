//! [`UploadBuffers`]: the one memory budget of every upload of a store.
//!
//! Every byte an upload holds in memory (the part being filled and the parts
//! in flight) lives in a part buffer taken from this pool, and a buffer goes
//! back only when the last reference to its bytes is dropped, that is when
//! the request that sent it (with all its retries) is over. So the memory of
//! all uploads of a broker together is at most `buffers × part size`,
//! whatever the number of partitions, files and their sizes.
//!
//! Buffers are allocated once (lazily, up to the budget) and reused: a fresh
//! 8 MiB allocation per part made the allocator keep freed parts around in
//! per-thread arenas, which showed as resident memory well above what was in
//! use (see BENCHMARKS.md, figure 5).
//!
//! No deadlock: an upload holds at most one buffer while waiting for another
//! (the one it fills is sent before it asks for the next), and buffers in
//! flight come back when their request ends, which every request does (each
//! has a timeout).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A bounded pool of equally sized part buffers, shared by every clone of a
/// [`crate::BackupStore`].
#[derive(Debug)]
pub(crate) struct UploadBuffers {
    buffer_bytes: usize,
    count: usize,
    permits: Arc<Semaphore>,
    /// Buffers allocated before and returned since; at most `count`.
    free: Mutex<Vec<Vec<u8>>>,
}

impl UploadBuffers {
    /// A pool of `memory_limit_bytes / buffer_bytes` buffers (at least one) of
    /// `buffer_bytes` each.
    pub(crate) fn new(memory_limit_bytes: u64, buffer_bytes: usize) -> Arc<Self> {
        assert!(buffer_bytes > 0, "part buffers must not be empty");
        let count = usize::try_from(memory_limit_bytes / buffer_bytes as u64)
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Self {
            buffer_bytes,
            count,
            permits: Arc::new(Semaphore::new(count)),
            free: Mutex::new(Vec::new()),
        })
    }

    /// The number of buffers of the pool.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// The size of each buffer.
    pub(crate) fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    /// The number of buffers not taken right now.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// The number of buffers allocated so far (taken or free).
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> usize {
        self.free.lock().unwrap().len() + self.count - self.available()
    }

    /// An empty part buffer, waiting until one is free.
    pub(crate) async fn take(self: &Arc<Self>) -> PartBuffer {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the upload buffer semaphore is never closed");
        let data = self
            .free
            .lock()
            .expect("upload buffer pool poisoned")
            .pop()
            .unwrap_or_else(|| vec![0; self.buffer_bytes]);
        debug_assert_eq!(data.len(), self.buffer_bytes);
        PartBuffer {
            data,
            len: 0,
            pool: self.clone(),
            _permit: permit,
        }
    }
}

/// A buffer of the pool, filled from the front; it goes back to the pool when
/// dropped (after [`PartBuffer::freeze`], when the last `Bytes` of it is).
#[derive(Debug)]
pub(crate) struct PartBuffer {
    /// Always `buffer_bytes` long; only `..len` is content.
    data: Vec<u8>,
    len: usize,
    pool: Arc<UploadBuffers>,
    // Released after `Drop::drop` returned the buffer to the free list.
    _permit: OwnedSemaphorePermit,
}

impl PartBuffer {
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of bytes that still fit.
    pub(crate) fn spare(&self) -> usize {
        self.data.len() - self.len
    }

    pub(crate) fn is_full(&self) -> bool {
        self.spare() == 0
    }

    /// The first `n` spare bytes, to be filled and then committed with
    /// [`Self::commit`].
    pub(crate) fn spare_mut(&mut self, n: usize) -> &mut [u8] {
        let start = self.len;
        &mut self.data[start..start + n]
    }

    /// Makes the first `n` spare bytes content.
    pub(crate) fn commit(&mut self, n: usize) {
        assert!(
            n <= self.spare(),
            "commit beyond the buffer: n={n} spare={}",
            self.spare()
        );
        self.len += n;
    }

    /// Copies as much of `bytes` as fits; returns how much that was.
    pub(crate) fn extend(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.spare());
        self.spare_mut(n).copy_from_slice(&bytes[..n]);
        self.commit(n);
        n
    }

    /// The content as `Bytes` without a copy; the buffer returns to the pool
    /// when the last clone of it is dropped.
    pub(crate) fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PartBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

impl Drop for PartBuffer {
    fn drop(&mut self) {
        let data = std::mem::take(&mut self.data);
        let mut free = self
            .pool
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // At most `count` buffers exist: one per permit.
        debug_assert!(free.len() < self.pool.count);
        free.push(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn buffers_are_bounded_and_come_back_when_their_bytes_are_dropped() {
        let pool = UploadBuffers::new(3 * 16, 16);
        assert_eq!(pool.count(), 3);
        let mut a = pool.take().await;
        assert_eq!(
            a.extend(b"0123456789abcdefXYZ"),
            16,
            "only what fits is copied"
        );
        assert!(a.is_full());
        let bytes = a.freeze();
        assert_eq!(&bytes[..], b"0123456789abcdef");
        let clone = bytes.clone();
        let _b = pool.take().await;
        let _c = pool.take().await;
        assert_eq!(pool.available(), 0);

        // A fourth buffer waits while the bytes of the first are alive.
        let waiting = tokio::time::timeout(Duration::from_millis(50), pool.take()).await;
        assert!(
            waiting.is_err(),
            "the pool gave more buffers than its budget"
        );
        drop(bytes);
        assert_eq!(pool.available(), 0, "a clone still holds the first buffer");
        drop(clone);
        assert_eq!(pool.available(), 1);

        // The buffer is reused, and comes back empty.
        let d = pool.take().await;
        assert!(d.is_empty());
        assert_eq!(d.spare(), 16);
        assert_eq!(pool.free.lock().unwrap().len(), 0);
    }

    #[tokio::test]
    async fn a_budget_below_one_buffer_still_gives_one() {
        let pool = UploadBuffers::new(1, 1024);
        assert_eq!(pool.count(), 1);
        let mut buffer = pool.take().await;
        buffer.spare_mut(4).copy_from_slice(b"abcd");
        buffer.commit(4);
        assert_eq!(buffer.as_ref(), b"abcd");
        assert_eq!(buffer.spare(), 1020);
    }
}
