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
    let (mut s, mut expected, _) = FileStorage::open(dir, "c", NodeId(1)).unwrap();
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
    let (fresh, _, rec) = FileStorage::open(dir.path(), "c", NodeId(1)).unwrap();
    drop(fresh);
    assert_eq!(rec, Recovery::default());
    let (expected, _) = write(
        dir.path(),
        &[
            persist(1, 1, &["a", "b", "c"]),
            // Truncation of a conflicting suffix, then a vote-only record.
            persist(2, 2, &["x"]),
            Persist {
                hard_state: Some(HardState {
                    current_term: Term(3),
                    voted_for: None,
                }),
                log: None,
            },
        ],
    );
    assert_eq!(expected.log.len(), 2);
    let (_, state, rec) = FileStorage::open(dir.path(), "c", NodeId(1)).unwrap();
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

    let (mut s, state, rec) = FileStorage::open(dir.path(), "c", NodeId(1)).unwrap();
    assert_eq!(state, expected);
    assert_eq!(rec.truncated_at, Some(good_len));
    assert_eq!(rec.truncated_bytes, (record.len() / 2) as u64);
    assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
    // Appending after the truncation gives a valid WAL.
    s.append(&persist(1, 3, &["c"])).unwrap();
    s.sync().unwrap();
    drop(s);
    let (_, state, rec) = FileStorage::open(dir.path(), "c", NodeId(1)).unwrap();
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
    let (_, state, rec) = FileStorage::open(dir.path(), "c", NodeId(1)).unwrap();
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
    let err = FileStorage::open(dir.path(), "c", NodeId(1)).unwrap_err();
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
    let err = FileStorage::open(dir.path(), "c", NodeId(1)).unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt { offset, .. } if *offset == second as u64),
        "{err}"
    );
    assert!(err.to_string().contains("header checksum mismatch"));
}

#[test]
fn a_flipped_byte_in_the_last_record_is_a_torn_tail() {
    // Indistinguishable from a torn write: the last record goes, with a warning.
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = write(dir.path(), &[persist(1, 1, &["a"]), persist(1, 2, &["b"])]);
    let mut bytes = fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let (_, state, rec) = FileStorage::open(dir.path(), "c", NodeId(1)).unwrap();
    assert_eq!(state.log.len(), 1);
    assert!(rec.truncated_at.is_some());
}

#[test]
fn another_nodes_directory_and_a_foreign_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &[persist(1, 1, &["a"])]);
    let err = FileStorage::open(dir.path(), "c", NodeId(2)).unwrap_err();
    assert!(
        err.to_string()
            .contains("belongs to node 1 of cluster \"c\", not node 2"),
        "{err}"
    );
    let err = FileStorage::open(dir.path(), "other", NodeId(1)).unwrap_err();
    assert!(matches!(err, StorageError::WrongIdentity { .. }));

    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("raft.wal"), b"not a wal at all").unwrap();
    let err = FileStorage::open(dir.path(), "c", NodeId(1)).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("raft.wal is not a raft-node WAL (bad magic)"),
        "{err}"
    );
}

#[test]
fn an_unusable_data_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    fs::write(&file, b"x").unwrap();
    let err = FileStorage::open(&file, "c", NodeId(1)).unwrap_err();
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
