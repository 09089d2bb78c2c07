//! The spool's one writer thread: groups appends, removals and attempt
//! counts into transactions, and reopens the file after a write error.

use super::*;

/// The single writer: batches requests into transactions.
pub(super) struct Writer {
    state: Arc<State>,
    next_seq: u64,
    /// A write failed: the handle is unusable until the file is opened again.
    reopen: bool,
    /// Since when a non-durable commit is waiting for an `fsync`.
    dirty_since: Option<Instant>,
}

/// A request's answer before the commit decides it.
type Outcome = Result<u64, SpoolError>;

impl Writer {
    pub(super) fn new(state: Arc<State>, next_seq: u64) -> Self {
        Self {
            state,
            next_seq,
            reopen: false,
            dirty_since: None,
        }
    }

    pub(super) fn run(mut self, rx: mpsc::Receiver<Request>) {
        let mut carry: Option<Request> = None;
        loop {
            let first = match carry.take() {
                Some(request) => request,
                None => match self.dirty_since {
                    None => match rx.recv() {
                        Ok(request) => request,
                        Err(mpsc::RecvError) => break,
                    },
                    Some(since) => {
                        let left = FLUSH_INTERVAL.saturating_sub(since.elapsed());
                        match rx.recv_timeout(left) {
                            Ok(request) => request,
                            Err(mpsc::RecvTimeoutError::Timeout) => {
                                self.flush();
                                continue;
                            }
                            Err(mpsc::RecvTimeoutError::Disconnected) => break,
                        }
                    }
                },
            };
            let mut batch_bytes = first.appended_bytes();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH_ENTRIES {
                match rx.try_recv() {
                    Ok(request) => {
                        let size = request.appended_bytes();
                        if size > 0 && batch_bytes + size > MAX_BATCH_BYTES {
                            carry = Some(request);
                            break;
                        }
                        batch_bytes += size;
                        batch.push(request);
                    }
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
        self.flush();
    }

    /// Applies a batch in one transaction, commits, then answers every waiter.
    fn commit_batch(&mut self, batch: Vec<Request>) {
        let has_append = batch.iter().any(|r| matches!(r, Request::Append { .. }));
        let durable = has_append
            || self
                .dirty_since
                .is_some_and(|since| since.elapsed() >= FLUSH_INTERVAL);
        let first_seq = self.next_seq;
        let mut events = self.state.events.load(Ordering::Acquire);
        let mut bytes = self.state.bytes.load(Ordering::Acquire);

        let result = self
            .reopen_if_needed()
            .and_then(|()| self.apply(&batch, durable, &mut events, &mut bytes));
        let outcomes = match result {
            Ok(outcomes) => {
                if self.state.health.succeeded() {
                    tracing::info!(dir = %self.state.dir.display(), "Spool writes succeed again.");
                }
                self.state.events.store(events, Ordering::Release);
                self.state.bytes.store(bytes, Ordering::Release);
                if durable {
                    self.state.commits.fetch_add(1, Ordering::AcqRel);
                    self.dirty_since = None;
                } else if self.dirty_since.is_none() {
                    self.dirty_since = Some(Instant::now());
                }
                outcomes
            }
            Err(e) => {
                // Nothing of the batch is stored; hand its sequence numbers out again.
                self.next_seq = first_seq;
                self.reopen = true;
                self.state.health.failed();
                tracing::error!(dir = %self.state.dir.display(), error = %e, "Spool commit failed.");
                let error = self.io(e);
                batch.iter().map(|_| Err(error.clone())).collect()
            }
        };
        let appended = has_append
            && outcomes
                .iter()
                .zip(&batch)
                .any(|(o, r)| matches!(r, Request::Append { .. }) && o.is_ok());
        for (request, outcome) in batch.into_iter().zip(outcomes) {
            // A waiter that gave up (dropped its future) is not an error.
            match request {
                Request::Append { reply, .. } => {
                    let _ = reply.send(outcome);
                }
                Request::Remove { reply, .. } | Request::Bump { reply, .. } => {
                    let _ = reply.send(outcome.map(|_| ()));
                }
            }
        }
        if appended {
            self.state.appended.notify_one();
        }
    }

    /// After a failed write, drops the unusable handle and opens the file
    /// again (redb repairs it), then recounts what it holds: the failed
    /// commit is either wholly there or wholly not.
    fn reopen_if_needed(&mut self) -> Result<(), redb::Error> {
        if !self.reopen {
            return Ok(());
        }
        let mut slot = self.state.db.write().unwrap_or_else(|p| p.into_inner());
        // The old handle holds the file lock; it must go before the new open.
        *slot = None;
        let db = open_file(&self.state.dir)?;
        let (events, bytes, next_seq) = count(&db)?;
        *slot = Some(db);
        self.state.events.store(events, Ordering::Release);
        self.state.bytes.store(bytes, Ordering::Release);
        self.next_seq = self.next_seq.max(next_seq);
        self.reopen = false;
        tracing::info!(dir = %self.state.dir.display(), events, "Spool reopened after a write error.");
        Ok(())
    }

    /// Writes the batch into one transaction and commits it. `Err` means the
    /// whole transaction failed; per-request refusals (full, corrupt) are `Ok`
    /// outcomes of their own.
    fn apply(
        &mut self,
        batch: &[Request],
        durable: bool,
        events: &mut u64,
        bytes: &mut u64,
    ) -> Result<Vec<Outcome>, redb::Error> {
        let start = self.next_seq;
        let db = self.state.db.read().unwrap_or_else(|p| p.into_inner());
        let mut txn = db
            .as_ref()
            .ok_or(redb::Error::DatabaseClosed)?
            .begin_write()?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        let mut outcomes = Vec::with_capacity(batch.len());
        {
            let mut table = txn.open_table(EVENTS)?;
            for request in batch {
                let outcome = match request {
                    Request::Append { value, .. } => {
                        let size = KEY_SIZE + value.len() as u64;
                        if bytes.saturating_add(size) > self.state.max_bytes {
                            Err(SpoolError::Full {
                                max_bytes: self.state.max_bytes,
                            })
                        } else {
                            let seq = self.next_seq;
                            self.next_seq += 1;
                            table.insert(seq, value.as_slice())?;
                            *events += 1;
                            *bytes += size;
                            Ok(seq)
                        }
                    }
                    Request::Remove { seq, .. } => {
                        if let Some(old) = table.remove(*seq)? {
                            *events = events.saturating_sub(1);
                            *bytes = bytes.saturating_sub(KEY_SIZE + old.value().len() as u64);
                        }
                        Ok(*seq)
                    }
                    Request::Bump { seq, .. } => {
                        let current = table.get(*seq)?.map(|v| v.value().to_vec());
                        match current {
                            None => Ok(*seq),
                            Some(mut value) => match bump(&mut value) {
                                Ok(()) => {
                                    table.insert(*seq, value.as_slice())?;
                                    Ok(*seq)
                                }
                                Err(why) => Err(SpoolError::CorruptEntry {
                                    dir: self.state.dir.display().to_string(),
                                    seq: *seq,
                                    why,
                                }),
                            },
                        }
                    }
                };
                outcomes.push(outcome);
            }
        }
        if self.next_seq != start {
            store_next_seq(&txn, self.next_seq)?;
        }
        txn.commit()?;
        Ok(outcomes)
    }

    /// Makes pending non-durable commits durable: an `fsync`-only commit.
    fn flush(&mut self) {
        if self.dirty_since.is_none() {
            return;
        }
        if self.reopen {
            return;
        }
        let result = (|| -> Result<(), redb::Error> {
            let db = self.state.db.read().unwrap_or_else(|p| p.into_inner());
            let mut txn = db
                .as_ref()
                .ok_or(redb::Error::DatabaseClosed)?
                .begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            txn.commit()?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.state.commits.fetch_add(1, Ordering::AcqRel);
                self.dirty_since = None;
            }
            Err(e) => {
                // Keep dirty: the next batch or timeout tries again. The worst case is
                // replayed removals, i.e. duplicate publishes.
                self.dirty_since = Some(Instant::now());
                tracing::error!(dir = %self.state.dir.display(), error = %e, "Spool flush failed.");
            }
        }
    }

    fn io(&self, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> SpoolError {
        super::io_error(&self.state.dir, e)
    }
}
