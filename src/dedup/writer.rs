//! The window's one writer thread: commits queued claims in batches, and
//! expires and caps the window in the same transactions.

use super::*;

/// The single writer: waits for a batch (a full one, or the oldest claim
/// being [`FLUSH_INTERVAL`] old) or a trim request, commits it, repeats;
/// commits what is left and exits once the last handle is gone.
pub(super) fn writer(shared: Arc<Shared>) {
    /// Marks the writer stopped even if it panics, so claims report it, and
    /// lets go of the lookup snapshot, so closing the file leaves no read
    /// transaction open.
    struct Stopped<'a>(&'a Shared);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            self.0.snapshot.store(None);
            self.0.lock().stopped = true;
        }
    }
    let _stopped = Stopped(&shared);
    let mut reopen = false;

    loop {
        let (batch, trim_request, closing, dropped) = {
            let mut index = shared.lock();
            loop {
                if index.closing || index.trim || index.pending.len() >= MAX_BATCH {
                    break;
                }
                match index.pending_since {
                    None => {
                        index = shared
                            .wake
                            .wait(index)
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                    Some(since) => {
                        let left = FLUSH_INTERVAL.saturating_sub(since.elapsed());
                        if left.is_zero() {
                            break;
                        }
                        index = shared
                            .wake
                            .wait_timeout(index, left)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                }
            }
            index.pending_since = None;
            let trim_request = std::mem::take(&mut index.trim).then_some(index.trim_requests);
            (
                std::mem::take(&mut index.pending),
                trim_request,
                index.closing,
                std::mem::take(&mut index.dropped),
            )
        };
        if dropped > 0 {
            tracing::warn!(
                file = %shared.path.display(),
                dropped,
                "De-duplication backlog full; the oldest queued claims were forgotten."
            );
        }
        if !batch.is_empty() || trim_request.is_some() {
            let written = if reopen {
                shared.reopen().and_then(|()| {
                    reopen = false;
                    write_batch(&shared, &batch)
                })
            } else {
                write_batch(&shared, &batch)
            };
            match &written {
                Ok(_) => {
                    if shared.health.succeeded() {
                        tracing::info!(file = %shared.path.display(), "De-duplication commits succeed again.");
                    }
                }
                Err(_) => {
                    reopen = true;
                    shared.health.failed();
                }
            }
            let failure = match written {
                Ok(Some(entries)) => {
                    shared.commits.fetch_add(1, Ordering::AcqRel);
                    shared.entries.store(entries, Ordering::Release);
                    shared.refresh_snapshot();
                    None
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::error!(
                        file = %shared.path.display(),
                        error = %e,
                        claims = batch.len(),
                        "De-duplication commit failed; these claims are forgotten."
                    );
                    Some(e.to_string())
                }
            };
            {
                // Committed (so readers find them in the file) or failed (so
                // they are forgotten, as in a crash): no longer unsynced,
                // unless claimed again since with another time.
                let mut index = shared.lock();
                for (at, id) in &batch {
                    if index.unsynced.get(id) == Some(at) {
                        index.unsynced.remove(id);
                    }
                }
                index.failure = failure;
            }
            shared
                .handled
                .fetch_add(batch.len() as u64, Ordering::AcqRel);
            if let Some(request) = trim_request {
                shared.trims_done.store(request, Ordering::Release);
            }
        }
        if closing {
            return;
        }
    }
}

/// Writes the batch's new ids and trims the file, in one transaction;
/// commits only if something changed. `Ok(Some(ids in the file))` when a
/// transaction was committed.
fn write_batch(shared: &Shared, batch: &VecDeque<(u64, Id)>) -> Result<Option<u64>, redb::Error> {
    let db = shared.db.read().unwrap_or_else(PoisonError::into_inner);
    let mut txn = db
        .as_ref()
        .ok_or(redb::Error::DatabaseClosed)?
        .begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let (changed, entries) = {
        let mut accepted = txn.open_table(ACCEPTED)?;
        let mut by_id = txn.open_table(BY_ID)?;
        let mut changed = false;
        for &(at, id) in batch {
            let stored = by_id.get(&id)?.map(|v| v.value());
            if let Some(first) = stored {
                if shared.live(first, at) {
                    // Already in the window: the first delivery's time stays.
                    continue;
                }
                // Expired but not trimmed yet: replaced by the new time.
                accepted.remove(join_key(first, &id))?;
            }
            by_id.insert(id, at)?;
            accepted.insert(join_key(at, &id), ())?;
            changed = true;
        }
        let now = (shared.clock)();
        let removed = trim(
            &mut accepted,
            &mut by_id,
            now,
            shared.window_ms,
            shared.max_entries,
        )?;
        (changed || removed > 0, by_id.len()?)
    };
    if changed {
        txn.commit()?;
        Ok(Some(entries))
    } else {
        txn.abort()?;
        Ok(None)
    }
}

/// Deletes the entries accepted at or before `now - window` (a key range at
/// the front of "accepted"), then the oldest entries while "by_id" holds more
/// than `max_entries` ids; returns how many "accepted" keys were deleted.
pub(super) fn trim(
    accepted: &mut redb::Table<'_, Key, ()>,
    by_id: &mut redb::Table<'_, Id, u64>,
    now: u64,
    window_ms: u64,
    max_entries: u64,
) -> Result<u64, redb::Error> {
    let mut removed = 0;
    if let Some(cutoff) = now.checked_sub(window_ms) {
        // Keys are (time, id): everything below (cutoff + 1, 0…0) has time <= cutoff.
        let first_live = join_key(cutoff.saturating_add(1), &[0; 16]);
        loop {
            let deleted = delete_oldest(accepted, by_id, Some(first_live), TRIM_CHUNK)?;
            removed += deleted as u64;
            if deleted < TRIM_CHUNK {
                break;
            }
        }
    }
    loop {
        let excess = by_id.len()?.saturating_sub(max_entries);
        if excess == 0 {
            break;
        }
        let limit = usize::try_from(excess)
            .unwrap_or(usize::MAX)
            .min(TRIM_CHUNK);
        let deleted = delete_oldest(accepted, by_id, None, limit)?;
        removed += deleted as u64;
        if deleted == 0 {
            break;
        }
    }
    Ok(removed)
}

/// Deletes up to `limit` of the oldest "accepted" keys (only those below
/// `before`, if given) with one range delete, and for each the "by_id" row if
/// it still holds that key's time; returns how many keys were deleted.
fn delete_oldest(
    accepted: &mut redb::Table<'_, Key, ()>,
    by_id: &mut redb::Table<'_, Id, u64>,
    before: Option<Key>,
    limit: usize,
) -> Result<usize, redb::Error> {
    let mut keys = Vec::with_capacity(limit.min(TRIM_CHUNK));
    {
        let range = match before {
            Some(end) => accepted.range(..end)?,
            None => accepted.iter()?,
        };
        for entry in range.take(limit) {
            let (key, _) = entry?;
            keys.push(key.value());
        }
    }
    let Some(&last) = keys.last() else {
        return Ok(0);
    };
    // The keys read are exactly those up to `last`: the range starts at the front.
    accepted.retain_in(..=last, |_, ()| false)?;
    for key in &keys {
        let (at, id) = split_key(key);
        if by_id.get(&id)?.map(|v| v.value()) == Some(at) {
            by_id.remove(&id)?;
        }
    }
    Ok(keys.len())
}
