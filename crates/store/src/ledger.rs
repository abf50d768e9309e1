//! The usage ledger writer: requests never wait on the database, and nothing is lost or written
//! twice.
//!
//! [`Ledger::record`] puts a record on a bounded queue and returns at once. A writer task takes
//! records off the queue and inserts them in batches (every `batch_size` records or
//! `flush_interval`). When an insert fails, the batch is appended to a spill file (JSON lines,
//! fsynced) and the database is left alone for `retry_interval`; meanwhile new batches go to the
//! spill file too. Every `retry_interval` the writer replays the spill file: it renames it aside,
//! inserts its records, and deletes it when all are in. Inserts skip ids already present, so a
//! replay cut short (by an outage or a crash) is simply done again. A spill file left by a crash
//! is replayed when the next writer starts.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{Error, Result, Store, UsageRecord};

/// How the writer batches and where it spills.
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub queue_capacity: usize,
    /// After a failed insert, how long to spill without trying the database, and how often to
    /// try replaying the spill file.
    pub retry_interval: Duration,
    pub spill_path: PathBuf,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            batch_size: 500,
            flush_interval: Duration::from_millis(200),
            queue_capacity: 100_000,
            retry_interval: Duration::from_secs(1),
            spill_path: PathBuf::from("cognitude-ledger.spill"),
        }
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct LedgerStats {
    written: AtomicU64,
    spilled: AtomicU64,
    replayed: AtomicU64,
    failed_writes: AtomicU64,
    queued: AtomicU64,
}

impl LedgerStats {
    /// Records inserted straight from the queue.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
    /// Records appended to the spill file.
    pub fn spilled(&self) -> u64 {
        self.spilled.load(Ordering::Relaxed)
    }
    /// Records inserted from the spill file.
    pub fn replayed(&self) -> u64 {
        self.replayed.load(Ordering::Relaxed)
    }
    /// Batch inserts that failed (their records were spilled, not lost).
    pub fn failed_writes(&self) -> u64 {
        self.failed_writes.load(Ordering::Relaxed)
    }
    /// Records waiting in the queue now.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }
}

enum Msg {
    Record(Box<UsageRecord>),
    Flush(oneshot::Sender<()>),
}

/// The spill file, shared by the writer and by producers when the queue is full.
#[derive(Debug)]
struct Spill {
    path: PathBuf,
    replaying: PathBuf,
    lock: Mutex<()>,
}

impl Spill {
    fn new(path: PathBuf) -> Spill {
        let mut replaying = path.clone().into_os_string();
        replaying.push(".replaying");
        Spill {
            path,
            replaying: PathBuf::from(replaying),
            lock: Mutex::new(()),
        }
    }

    /// Appends records durably.
    fn append(&self, records: &[UsageRecord]) -> Result<()> {
        let mut buf = Vec::with_capacity(records.len() * 512);
        for r in records {
            serde_json::to_writer(&mut buf, r).map_err(|e| Error::Spill(e.to_string()))?;
            buf.push(b'\n');
        }
        let _guard = self
            .lock
            .lock()
            .map_err(|_| Error::Spill("lock poisoned".into()))?;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::Spill(format!("{}: {e}", self.path.display())))?;
        f.write_all(&buf)
            .and_then(|()| f.sync_data())
            .map_err(|e| Error::Spill(format!("{}: {e}", self.path.display())))
    }

    fn pending(&self) -> bool {
        self.path.exists() || self.replaying.exists()
    }

    /// Moves the spill file aside for replay (unless an earlier replay's file is still there).
    fn take_for_replay(&self) -> Result<Option<PathBuf>> {
        let _guard = self
            .lock
            .lock()
            .map_err(|_| Error::Spill("lock poisoned".into()))?;
        if self.replaying.exists() {
            // Replay the older file first; the current one waits for the next round.
            return Ok(Some(self.replaying.clone()));
        }
        if !self.path.exists() {
            return Ok(None);
        }
        std::fs::rename(&self.path, &self.replaying)
            .map_err(|e| Error::Spill(format!("{}: {e}", self.path.display())))?;
        Ok(Some(self.replaying.clone()))
    }
}

/// Reads a spill file; a torn last line (a crash mid-append) is skipped.
fn read_spill(path: &Path) -> Result<Vec<UsageRecord>> {
    let f = File::open(path).map_err(|e| Error::Spill(format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line.map_err(|e| Error::Spill(e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<UsageRecord>(&line) {
            Ok(r) => out.push(r),
            Err(e) => tracing::warn!(error = %e, "skipping a damaged spill line"),
        }
    }
    Ok(out)
}

/// A handle for recording usage. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Msg>,
    spill: Arc<Spill>,
    stats: Arc<LedgerStats>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Record(r) => write!(f, "Record({})", r.id),
            Msg::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl Ledger {
    /// Starts the writer task on the current runtime.
    pub fn start(store: Store, options: LedgerOptions) -> (Ledger, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        let spill = Arc::new(Spill::new(options.spill_path.clone()));
        let stats = Arc::new(LedgerStats::default());
        let writer = Writer {
            store,
            options,
            spill: spill.clone(),
            stats: stats.clone(),
            down_until: Arc::new(Mutex::new(None)),
            in_flight: tokio::task::JoinSet::new(),
        };
        let handle = tokio::spawn(writer.run(rx));
        (Ledger { tx, spill, stats }, handle)
    }

    /// Queues a record. Never waits: when the queue is full the record goes straight to the
    /// spill file.
    pub fn record(&self, record: UsageRecord) {
        match self.tx.try_send(Msg::Record(Box::new(record))) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(Msg::Record(r)))
            | Err(mpsc::error::TrySendError::Closed(Msg::Record(r))) => {
                match self.spill.append(std::slice::from_ref(&r)) {
                    Ok(()) => {
                        self.stats.spilled.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tracing::error!(error = %e, record = %r.id, "usage record lost"),
                }
            }
            Err(_) => {}
        }
    }

    /// Waits until every record queued before this call is written or spilled, and a replay of
    /// the spill file has been tried.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    pub fn stats(&self) -> &LedgerStats {
        &self.stats
    }

    /// Whether records are waiting in the spill file.
    pub fn spill_pending(&self) -> bool {
        self.spill.pending()
    }
}

struct Writer {
    store: Store,
    options: LedgerOptions,
    spill: Arc<Spill>,
    stats: Arc<LedgerStats>,
    /// Set after a failed insert: until then, batches go straight to the spill file.
    down_until: Arc<Mutex<Option<Instant>>>,
    /// Batch inserts under way (several at once, so one round trip does not cap throughput).
    in_flight: tokio::task::JoinSet<()>,
}

/// Batch inserts the writer keeps in flight at once.
const MAX_IN_FLIGHT: usize = 4;

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut batch: Vec<UsageRecord> = Vec::with_capacity(self.options.batch_size);
        let mut tick = tokio::time::interval(self.options.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A spill file left by a crash is replayed first.
        self.replay().await;
        let mut next_replay = Instant::now() + self.options.retry_interval;
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Record(r)) => {
                        self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                        batch.push(*r);
                        if batch.len() >= self.options.batch_size {
                            self.write(&mut batch).await;
                        }
                    }
                    Some(Msg::Flush(done)) => {
                        let mut waiters = vec![done];
                        while let Ok(m) = rx.try_recv() {
                            match m {
                                Msg::Record(r) => {
                                    self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                                    batch.push(*r);
                                    if batch.len() >= self.options.batch_size {
                                        self.write(&mut batch).await;
                                    }
                                }
                                Msg::Flush(d) => waiters.push(d),
                            }
                        }
                        self.write(&mut batch).await;
                        self.settle().await;
                        self.replay().await;
                        for w in waiters {
                            let _ = w.send(());
                        }
                    }
                    None => {
                        self.write(&mut batch).await;
                        self.settle().await;
                        return;
                    }
                },
                _ = tick.tick() => {
                    while self.in_flight.try_join_next().is_some() {}
                    metrics::gauge!("cognitude_ledger_queued").set(self.stats.queued() as f64);
                    if !batch.is_empty() {
                        self.write(&mut batch).await;
                    }
                    if Instant::now() >= next_replay {
                        next_replay = Instant::now() + self.options.retry_interval;
                        if self.spill.pending() {
                            self.replay().await;
                        }
                    }
                }
            }
        }
    }

    fn db_known_down(&self) -> bool {
        self.down_until
            .lock()
            .map(|d| d.is_some_and(|t| Instant::now() < t))
            .unwrap_or(false)
    }

    fn mark_down(&self) {
        if let Ok(mut d) = self.down_until.lock() {
            *d = Some(Instant::now() + self.options.retry_interval);
        }
    }

    /// Starts inserting the batch (waiting while too many inserts are under way), or spills it
    /// at once if the database failed moments ago. A failed insert spills its batch.
    async fn write(&mut self, batch: &mut Vec<UsageRecord>) {
        if batch.is_empty() {
            return;
        }
        let records = std::mem::replace(batch, Vec::with_capacity(self.options.batch_size));
        if self.db_known_down() {
            spill_batch(&self.spill, &self.stats, &records);
            return;
        }
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            let _ = self.in_flight.join_next().await;
        }
        let store = self.store.clone();
        let spill = self.spill.clone();
        let stats = self.stats.clone();
        let down_until = self.down_until.clone();
        let retry = self.options.retry_interval;
        self.in_flight.spawn(async move {
            match store.insert_usage(&records).await {
                Ok(_) => {
                    stats
                        .written
                        .fetch_add(records.len() as u64, Ordering::Relaxed);
                    metrics_written(records.len());
                }
                Err(e) => {
                    tracing::warn!(error = %e, records = records.len(), "ledger insert failed; spilling to disk");
                    stats.failed_writes.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("cognitude_ledger_failed_writes_total").increment(1);
                    if let Ok(mut d) = down_until.lock() {
                        *d = Some(Instant::now() + retry);
                    }
                    spill_batch(&spill, &stats, &records);
                }
            }
        });
    }

    /// Waits for every insert under way.
    async fn settle(&mut self) {
        while self.in_flight.join_next().await.is_some() {}
    }

    /// Writes the spill file's records to the database; keeps the file if that fails.
    async fn replay(&mut self) {
        if self.db_known_down() {
            return;
        }
        loop {
            let path = match self.spill.take_for_replay() {
                Ok(Some(p)) => p,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(error = %e, "cannot open the spill file");
                    return;
                }
            };
            let records = match read_spill(&path) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the spill file");
                    return;
                }
            };
            match self.store.insert_usage(&records).await {
                Ok(_) => {
                    self.stats
                        .replayed
                        .fetch_add(records.len() as u64, Ordering::Relaxed);
                    if let Err(e) = std::fs::remove_file(&path) {
                        tracing::error!(error = %e, "cannot remove the replayed spill file");
                        return;
                    }
                    tracing::info!(records = records.len(), "replayed spilled usage records");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "spill replay failed; will retry");
                    self.mark_down();
                    return;
                }
            }
        }
    }
}

fn spill_batch(spill: &Spill, stats: &LedgerStats, records: &[UsageRecord]) {
    match spill.append(records) {
        Ok(()) => {
            stats
                .spilled
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            metrics::counter!("cognitude_ledger_spilled_total").increment(records.len() as u64);
        }
        Err(e) => tracing::error!(error = %e, records = records.len(), "usage records lost"),
    }
}

fn metrics_written(n: usize) {
    metrics::counter!("cognitude_ledger_written_total").increment(n as u64);
}
