use super::*;
use raft_spec::{ClientId, Entry, HardState, LogIndex, LogWrite, Payload, Term};

fn entry(term: u64, key: &str) -> Entry<KvCommand> {
    Entry {
        term: Term(term),
        payload: Payload::Command {
            client_id: ClientId(1),
            request_no: term,
            command: KvCommand::Put {
                key: key.into(),
                value: "v".into(),
            },
        },
    }
}

fn persist(term: u64, from: u64, keys: &[&str]) -> Persist<KvCommand> {
    Persist {
        parallel: false,
        hard_state: Some(HardState {
            current_term: Term(term),
            voted_for: Some(NodeId(2)),
        }),
        log: Some(LogWrite {
            from: LogIndex(from),
            entries: keys.iter().map(|k| entry(term, k)).collect(),
        }),
    }
}

/// Writes `records` through the storage (one sync) and returns the state
/// they make and the WAL's path.
fn write(dir: &Path, records: &[Persist<KvCommand>]) -> (PersistentState<KvCommand>, PathBuf) {
    let (mut s, mut expected, _) = FileStorage::open(dir, "c", NodeId(1), true).unwrap();
    for r in records {
        s.append(r).unwrap();
        expected.apply_persist(r);
    }
    s.sync().unwrap();
    (expected, s.path().to_path_buf())
}

#[test]
fn restart_recovers_exactly_what_was_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let (fresh, _, rec) = FileStorage::open(dir.path(), "c", NodeId(1), true).unwrap();
    drop(fresh);
    assert_eq!(rec, Recovery::default());
    let (expected, _) = write(
        dir.path(),
        &[
            persist(1, 1, &["a", "b", "c"]),
            // Truncation of a conflicting suffix, then a vote-only record.
            persist(2, 2, &["x"]),
            Persist {
                parallel: false,
                hard_state: Some(HardState {
                    current_term: Term(3),
                    voted_for: None,
                }),
                log: None,
            },
        ],
    );
    assert_eq!(expected.log.len(), 2);
    let (_, state, rec) = FileStorage::open(dir.path(), "c", NodeId(1), true).unwrap();
    assert_eq!(state, expected);
    assert_eq!(state.current_term, Term(3));
    assert_eq!(rec.records, 3);
    assert_eq!(rec.truncated_at, None);
}

#[test]
fn a_torn_write_is_truncated_and_the_wal_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let (expected, path) = write(dir.path(), &[persist(1, 1, &["a"]), persist(1, 2, &["b"])]);
    let good_len = fs::metadata(&path).unwrap().len();
    // A real torn write: only the first half of the next record reaches the file.
    let mut record = Vec::new();
    encode_record(&persist(1, 3, &["c"]), &mut record).unwrap();
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&record[..record.len() / 2]).unwrap();
    f.sync_all().unwrap();
    drop(f);

    let (mut s, state, rec) = FileStorage::open(dir.path(), "c", NodeId(1), true).unwrap();
    assert_eq!(state, expected);
    assert_eq!(rec.truncated_at, Some(good_len));
    assert_eq!(rec.truncated_bytes, (record.len() / 2) as u64);
    assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
    // Appending after the truncation gives a valid WAL.
    s.append(&persist(1, 3, &["c"])).unwrap();
    s.sync().unwrap();
    drop(s);
    let (_, state, rec) = FileStorage::open(dir.path(), "c", NodeId(1), true).unwrap();
    assert_eq!(state.log.len(), 3);
    assert_eq!(rec.truncated_at, None);
}

#[test]
fn a_zero_filled_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (expected, path) = write(dir.path(), &[persist(1, 1, &["a"])]);
    let good_len = fs::metadata(&path).unwrap().len();
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[0u8; 100]).unwrap();
    drop(f);
    let (_, state, rec) = FileStorage::open(dir.path(), "c", NodeId(1), true).unwrap();
    assert_eq!(state, expected);
    assert_eq!(rec.truncated_at, Some(good_len));
}

#[test]
fn a_flipped_byte_before_the_tail_is_an_error_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = write(
        dir.path(),
        &[
            persist(1, 1, &["a"]),
            persist(1, 2, &["b"]),
            persist(1, 3, &["c"]),
        ],
    );
    let mut bytes = fs::read(&path).unwrap();
    let len_before = bytes.len();
    // Flip one payload byte of the first record (it starts right after the magic).
    bytes[MAGIC.len() + HEADER_LEN + 3] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    let err = FileStorage::open(dir.path(), "c", NodeId(1), true).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, StorageError::Corrupt { offset: 8, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("raft.wal at byte offset 8: record checksum mismatch"),
        "{msg}"
    );
    // Nothing was truncated: the operator decides.
    assert_eq!(fs::metadata(&path).unwrap().len() as usize, len_before);
}

#[test]
fn a_flipped_length_byte_before_the_tail_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = write(
        dir.path(),
        &[
            persist(1, 1, &["a"]),
            persist(1, 2, &["b"]),
            persist(1, 3, &["c"]),
        ],
    );
    let mut bytes = fs::read(&path).unwrap();
    let first_len = u32_at(&bytes, MAGIC.len()) as usize;
    let second = MAGIC.len() + HEADER_LEN + first_len;
    bytes[second] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let err = FileStorage::open(dir.path(), "c", NodeId(1), true).unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt { offset, .. } if *offset == second as u64),
        "{err}"
    );
    assert!(err.to_string().contains("header checksum mismatch"));
}

#[test]
fn a_flipped_byte_in_the_last_synced_record_is_lost_not_torn() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = write(dir.path(), &[persist(1, 1, &["a"]), persist(1, 2, &["b"])]);
    let mut bytes = fs::read(&path).unwrap();
    let n = bytes.len();
    let first_end = MAGIC.len() + HEADER_LEN + u32_at(&bytes, MAGIC.len()) as usize;
    bytes[n - 2] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let err = FileStorage::open(dir.path(), "c", NodeId(1), true).unwrap_err();
    assert!(
        matches!(&err, StorageError::LostSynced { offset, synced, .. }
            if *offset == first_end as u64 && *synced == n as u64),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "raft.wal: the valid records end at byte offset {first_end}, but {n} bytes were synced"
        )),
        "{msg}"
    );
    // Nothing was truncated.
    assert_eq!(fs::read(&path).unwrap(), bytes);

    // The same damage past the recorded synced length (a crash before the
    // watermark caught up) is indistinguishable from a torn write: the
    // record goes, with a warning.
    fs::write(
        dir.path().join(SYNCED_FILE),
        encode_synced(first_end as u64),
    )
    .unwrap();
    let (_, state, rec) = FileStorage::open(dir.path(), "c", NodeId(1), true).unwrap();
    assert_eq!(state.log.len(), 1);
    assert_eq!(rec.truncated_at, Some(first_end as u64));
}

#[test]
fn synced_records_cut_off_are_an_error_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<_> = (1..=6).map(|i| persist(1, i, &["k"])).collect();
    let (_, path) = write(dir.path(), &records);
    let bytes = fs::read(&path).unwrap();
    // Cut in the middle of the fourth record, as a bad copy or a disk that
    // lost its cache would.
    let mut at = MAGIC.len();
    for _ in 0..3 {
        at += HEADER_LEN + u32_at(&bytes, at) as usize;
    }
    fs::write(&path, &bytes[..at + 5]).unwrap();
    let err = FileStorage::open(dir.path(), "c", NodeId(1), true).unwrap_err();
    assert!(
        matches!(&err, StorageError::LostSynced { offset, synced, .. }
            if *offset == at as u64 && *synced == bytes.len() as u64),
        "{err}"
    );
    // Cut at a record boundary: the same.
    fs::write(&path, &bytes[..at]).unwrap();
    let err = FileStorage::open(dir.path(), "c", NodeId(1), true).unwrap_err();
    assert!(matches!(err, StorageError::LostSynced { .. }), "{err}");
    // An emptied WAL too.
    fs::write(&path, b"").unwrap();
    let err = FileStorage::open(dir.path(), "c", NodeId(1), true).unwrap_err();
    assert!(
        matches!(err, StorageError::LostSynced { offset: 0, .. }),
        "{err}"
    );
}

#[test]
fn a_torn_tail_past_the_synced_length_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (expected, path) = write(dir.path(), &[persist(1, 1, &["a"]), persist(1, 2, &["b"])]);
    let synced = fs::metadata(&path).unwrap().len();
    // Half of a record written after the last sync, then a crash.
    let mut torn = Vec::new();
    encode_record(&persist(1, 3, &["c"]), &mut torn).unwrap();
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&torn[..torn.len() / 2]).unwrap();
    drop(f);
    let (_, state, rec) = FileStorage::open(dir.path(), "c", NodeId(1), true).unwrap();
    assert_eq!(state, expected);
    assert_eq!(rec.truncated_at, Some(synced));
}

#[test]
fn a_directory_never_bootstrapped_is_refused_without_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let err = FileStorage::open(&data, "c", NodeId(1), false).unwrap_err();
    assert!(matches!(err, StorageError::NotBootstrapped { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("holds no node state"), "{msg}");
    assert!(msg.contains("--bootstrap"), "{msg}");
    assert!(!data.exists(), "a refused start creates nothing");

    // Bootstrapped once, it starts without the flag and keeps its storage id.
    let (first, _, _) = FileStorage::open(&data, "c", NodeId(1), true).unwrap();
    let id = first.storage_id();
    assert_ne!(id, 0);
    drop(first);
    let (again, _, _) = FileStorage::open(&data, "c", NodeId(1), false).unwrap();
    assert_eq!(again.storage_id(), id);
    drop(again);

    // Wiped, it is refused again; bootstrapped anew, it has another id.
    fs::remove_dir_all(&data).unwrap();
    let err = FileStorage::open(&data, "c", NodeId(1), false).unwrap_err();
    assert!(matches!(err, StorageError::NotBootstrapped { .. }), "{err}");
    let (fresh, _, _) = FileStorage::open(&data, "c", NodeId(1), true).unwrap();
    assert_ne!(fresh.storage_id(), id);
}

#[test]
fn a_bootstrapped_directory_missing_its_wal_or_identity_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = write(dir.path(), &[persist(1, 1, &["a"])]);
    fs::remove_file(&path).unwrap();
    let err = FileStorage::open(dir.path(), "c", NodeId(1), true).unwrap_err();
    assert!(matches!(err, StorageError::Incomplete { .. }), "{err}");
    assert!(err.to_string().contains("raft.wal is missing"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &[persist(1, 1, &["a"])]);
    fs::remove_file(dir.path().join(IDENTITY_FILE)).unwrap();
    let err = FileStorage::open(dir.path(), "c", NodeId(1), false).unwrap_err();
    assert!(matches!(err, StorageError::NotBootstrapped { .. }), "{err}");
    let err = FileStorage::open(dir.path(), "c", NodeId(1), true).unwrap_err();
    assert!(
        err.to_string().contains("holds records but")
            && err.to_string().contains("identity.json is missing"),
        "{err}"
    );
}

#[test]
fn a_peer_is_held_to_the_storage_id_first_seen() {
    let dir = tempfile::tempdir().unwrap();
    let mut known = KnownPeers::load(dir.path()).unwrap();
    known.admit(NodeId(2), 7).unwrap();
    known.admit(NodeId(2), 7).unwrap();
    known.admit(NodeId(3), 9).unwrap();
    // Recorded durably: a restarted node remembers.
    let mut known = KnownPeers::load(dir.path()).unwrap();
    known.admit(NodeId(3), 9).unwrap();
    let Err(AdmitError::Replaced(replaced)) = known.admit(NodeId(2), 8) else {
        panic!("a new storage id must be refused");
    };
    assert_eq!(
        (replaced.peer, replaced.presented, replaced.known),
        (NodeId(2), 8, 7)
    );
    let msg = replaced.to_string();
    assert!(
        msg.contains("node 2 presents storage id 0000000000000008"),
        "{msg}"
    );
    assert!(msg.contains("wiped and bootstrapped again"), "{msg}");
    assert!(msg.contains("peers.json"), "{msg}");

    fs::write(dir.path().join(PEERS_FILE), b"{not json").unwrap();
    let err = KnownPeers::load(dir.path()).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
}

#[test]
fn another_nodes_directory_and_a_foreign_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &[persist(1, 1, &["a"])]);
    let err = FileStorage::open(dir.path(), "c", NodeId(2), true).unwrap_err();
    assert!(
        err.to_string()
            .contains("belongs to node 1 of cluster \"c\", not node 2"),
        "{err}"
    );
    let err = FileStorage::open(dir.path(), "other", NodeId(1), true).unwrap_err();
    assert!(matches!(err, StorageError::WrongIdentity { .. }));

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &[]);
    fs::write(dir.path().join("raft.wal"), b"not a wal at all").unwrap();
    let err = FileStorage::open(dir.path(), "c", NodeId(1), true).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("raft.wal is not a raft-node WAL (bad magic)"),
        "{err}"
    );
}

#[test]
fn a_locked_data_directory_is_refused_naming_the_holder_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _, _) = FileStorage::open(dir.path(), "c", NodeId(1), true).unwrap();
    let err = FileStorage::open(dir.path(), "c", NodeId(1), true).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, StorageError::Locked { holder, .. } if *holder == format!("pid {}", std::process::id())),
        "{msg}"
    );
    assert!(
        msg.contains(&dir.path().join(LOCK_FILE).display().to_string()),
        "{msg}"
    );
    drop(first);
    assert!(FileStorage::open(dir.path(), "c", NodeId(1), true).is_ok());
}

#[test]
fn an_unusable_data_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    fs::write(&file, b"x").unwrap();
    let err = FileStorage::open(&file, "c", NodeId(1), true).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("create data directory"), "{msg}");
    assert!(msg.contains("plain-file"), "{msg}");
}

#[test]
fn mem_storage_loses_unsynced_records_on_crash() {
    let mut m = MemStorage::default();
    m.append(&persist(1, 1, &["a"])).unwrap();
    m.sync().unwrap();
    m.append(&persist(1, 2, &["b"])).unwrap();
    m.crash();
    assert_eq!(m.durable().log.len(), 1);
    m.append(&persist(1, 2, &["b"])).unwrap();
    m.fail_next_sync = true;
    assert!(m.sync().is_err());
    assert_eq!(m.durable().log.len(), 1);
}

#[test]
fn mem_storage_can_crash_right_after_a_sync_keeping_its_records() {
    let mut m = MemStorage::default();
    m.append(&persist(1, 1, &["a"])).unwrap();
    m.fail_after_next_sync = true;
    assert!(m.sync().is_err());
    m.crash();
    assert_eq!(m.durable().log.len(), 1);
    assert_eq!(m.syncs, 1);
    // Once only.
    m.append(&persist(1, 2, &["b"])).unwrap();
    m.sync().unwrap();
    assert_eq!(m.durable().log.len(), 2);
}

// ---- The WAL against the spec's persistent state, with crashes -----------

mod against_the_spec {
    use super::*;
    use proptest::prelude::*;

    /// One operation of a run of the storage.
    #[derive(Clone, Debug)]
    enum Op {
        /// A step's Persist: a hard state (term, vote), a log write from
        /// `from_back` entries before the end (0: an append), or both.
        Persist {
            hard: Option<(u64, Option<u64>)>,
            write: Option<(usize, Vec<u64>)>,
        },
        /// The batch's group commit.
        Sync,
        /// The next write is torn after this many bytes, and the node dies.
        TornWrite(usize),
        /// The next fsync fails, and the node dies.
        FailedSync,
        /// A process kill: the kernel keeps every byte written.
        Kill,
        /// A power loss: only synced bytes survive, and the first `torn`
        /// bytes written after them.
        PowerLoss(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        let term = 0u64..6;
        prop_oneof![
            6 => (
                proptest::option::of((term.clone(), proptest::option::of(1u64..4))),
                proptest::option::of((0usize..4, proptest::collection::vec(term, 0..4))),
            )
                .prop_map(|(hard, write)| Op::Persist { hard, write }),
            3 => Just(Op::Sync),
            1 => (0usize..64).prop_map(Op::TornWrite),
            1 => Just(Op::FailedSync),
            1 => Just(Op::Kill),
            1 => (0usize..200).prop_map(Op::PowerLoss),
        ]
    }

    /// The run's storage, and what the spec says it holds.
    struct Run {
        storage: FileStorage<SimFile>,
        /// Every Persist handed to the file (written), in order, and how
        /// many of them a sync covered.
        written: Vec<Persist<KvCommand>>,
        synced: usize,
        /// Persists appended but not yet written (the batch).
        batch: Vec<Persist<KvCommand>>,
        /// The state after every persist so far (the server's view).
        state: PersistentState<KvCommand>,
        dead: bool,
    }

    fn fold(persists: &[Persist<KvCommand>]) -> PersistentState<KvCommand> {
        let mut s = PersistentState::default();
        for p in persists {
            s.apply_persist(p);
        }
        s
    }

    impl Run {
        fn start(bytes: Vec<u8>) -> (FileStorage<SimFile>, PersistentState<KvCommand>) {
            Run::start_synced(bytes, 0)
        }

        /// Recovers from `bytes` of which `synced` were known durable:
        /// never [`StorageError::LostSynced`] after a crash the file model
        /// allows.
        fn start_synced(
            bytes: Vec<u8>,
            synced: u64,
        ) -> (FileStorage<SimFile>, PersistentState<KvCommand>) {
            let (storage, state, _) = FileStorage::recover_from(
                PathBuf::from("sim.wal"),
                SimFile::holding(bytes.clone()),
                &bytes,
                synced,
            )
            .unwrap();
            (storage, state)
        }

        /// A sync with the crash point `arm` sets: the node dies, and any
        /// prefix of the batch may be on disk. An empty batch writes
        /// nothing, so nothing crashes and the crash point is disarmed.
        fn crashing_sync(&mut self, arm: impl FnOnce(&mut SimFile)) {
            arm(self.storage.file_mut());
            let batch = std::mem::take(&mut self.batch);
            if self.storage.sync().is_err() {
                self.written.extend(batch);
                self.dead = true;
            } else {
                let f = self.storage.file_mut();
                f.tear_next_append = None;
                f.fail_next_sync = false;
            }
        }

        /// Restarts from `bytes` (what the crash left): the state recovered
        /// must be the fold of the first `k` written persists for some `k`
        /// between `lo` and `hi`; the run goes on from there.
        fn restart(&mut self, bytes: Vec<u8>, lo: usize, hi: usize) -> Result<(), TestCaseError> {
            let synced = self.storage.file().durable_len();
            let (storage, recovered) = Run::start_synced(bytes, synced);
            let k = (lo..=hi)
                .rev()
                .find(|&k| fold(&self.written[..k]) == recovered);
            prop_assert!(
                k.is_some(),
                "recovered {recovered:?}, which is no state between persist {lo} and {hi} of {:?}",
                self.written
            );
            let k = k.unwrap_or(lo);
            self.written.truncate(k);
            self.synced = k;
            self.batch.clear();
            self.state = recovered;
            self.storage = storage;
            self.dead = false;
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the crash, a restart recovers a state the spec's fold of
        /// the persists reaches: after a kill, everything written; after a
        /// power loss, at least everything synced and at most everything
        /// written. Nothing synced is ever lost, and recovery, told the
        /// synced length, never takes a crash for lost synced records.
        #[test]
        fn recovery_gives_back_every_synced_persist(ops in proptest::collection::vec(op(), 1..40)) {
            let (storage, state) = Run::start(Vec::new());
            let mut run = Run { storage, written: Vec::new(), synced: 0, batch: Vec::new(), state, dead: false };
            for op in ops {
                match op {
                    Op::Persist { hard, write } if !run.dead => {
                        let len = run.state.log.len();
                        let p = Persist {
        parallel: false,
                            hard_state: hard.map(|(t, v)| HardState {
                                current_term: Term(run.state.current_term.0.max(t)),
                                voted_for: v.map(NodeId),
                            }),
                            log: write.map(|(back, terms)| LogWrite {
                                from: LogIndex((len - back.min(len)) as u64 + 1),
                                entries: terms.iter().map(|&t| entry(t, "k")).collect(),
                            }),
                        };
                        run.storage.append(&p).unwrap();
                        run.state.apply_persist(&p);
                        run.batch.push(p);
                    }
                    Op::Sync if !run.dead => {
                        run.storage.sync().unwrap();
                        run.written.append(&mut run.batch);
                        run.synced = run.written.len();
                    }
                    Op::TornWrite(n) if !run.dead => {
                        run.crashing_sync(|f| f.tear_next_append = Some(n));
                    }
                    Op::FailedSync if !run.dead => {
                        run.crashing_sync(|f| f.fail_next_sync = true);
                    }
                    Op::Kill => {
                        // The kernel keeps what was written; a write torn by
                        // the crash leaves a prefix of its batch.
                        let bytes = run.storage.file().after_kill();
                        let (lo, hi) = (run.synced, run.written.len());
                        let lo = if run.dead { lo } else { hi };
                        run.restart(bytes, lo, hi)?;
                    }
                    Op::PowerLoss(torn) => {
                        let bytes = run.storage.file().after_power_loss(torn);
                        let (lo, hi) = (run.synced, run.written.len());
                        run.restart(bytes, lo, hi)?;
                    }
                    _ => {}
                }
            }
        }
    }

    /// The cases the issue names, each once, deterministically: a term
    /// above the last entry's term, a truncation followed by a crash, a
    /// record that writes the hard state and entries together; each
    /// recovered exactly after a power loss that follows its sync, and lost
    /// (with what came after it) when the sync never happened.
    #[test]
    fn named_cases_survive_a_power_loss_once_synced() {
        let hs = |t: u64, v: Option<u64>| HardState {
            current_term: Term(t),
            voted_for: v.map(NodeId),
        };
        let cases: Vec<(&str, Vec<Persist<KvCommand>>)> = vec![
            (
                "term above the last entry's term",
                vec![
                    persist(1, 1, &["a"]),
                    Persist {
                        parallel: false,
                        hard_state: Some(hs(4, None)),
                        log: None,
                    },
                ],
            ),
            (
                "truncation",
                vec![
                    persist(1, 1, &["a", "b", "c"]),
                    Persist {
                        parallel: false,
                        hard_state: None,
                        log: Some(LogWrite {
                            from: LogIndex(2),
                            entries: vec![],
                        }),
                    },
                ],
            ),
            (
                "hard state and entries in one record",
                vec![persist(2, 1, &["x", "y"])],
            ),
        ];
        for (name, records) in cases {
            let (mut storage, _) = Run::start(Vec::new());
            let expected = fold(&records);
            for r in &records {
                storage.append(r).unwrap();
            }
            // Not synced yet: a power loss keeps nothing of it.
            let (_, lost) = Run::start(
                storage.file().after_power_loss(usize::MAX / 2).split_off(0)[..MAGIC.len()]
                    .to_vec(),
            );
            assert_eq!(lost, PersistentState::default(), "{name}");
            storage.sync().unwrap();
            let (_, recovered) = Run::start(storage.file().after_power_loss(0));
            assert_eq!(recovered, expected, "{name}");
            // A record cut anywhere in a later batch leaves this one whole.
            storage.append(&persist(9, 1, &["z"])).unwrap();
            storage.file_mut().tear_next_append = Some(5);
            assert!(storage.sync().is_err(), "{name}");
            let (_, recovered) = Run::start(storage.file().after_kill());
            assert_eq!(recovered, expected, "{name}");
        }
    }

    /// A storage that skips the fsync loses synced records in a power loss:
    /// the check above fails on it (a negative control of the power-loss
    /// model).
    #[test]
    fn a_skipped_fsync_loses_synced_records_in_a_power_loss() {
        let (mut storage, _) = Run::start(Vec::new());
        storage.fsync = false;
        storage.append(&persist(1, 1, &["a"])).unwrap();
        storage.sync().unwrap();
        let (_, after_kill) = Run::start(storage.file().after_kill());
        assert_eq!(after_kill, fold(&[persist(1, 1, &["a"])]));
        let (_, after_power_loss) = Run::start(storage.file().after_power_loss(0));
        assert_eq!(after_power_loss, PersistentState::default());
    }
}
