//! Any bytes as the records of a produce request: the log validates them (length, magic,
//! CRC) and appends all or none, never panicking, and what it stored reads back.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = sluice_log::batch::split_batches(data);
    let dir = std::env::temp_dir().join(format!("sluice-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Ok(mut log) = sluice_log::PartitionLog::open(&dir, sluice_log::LogConfig::default()) {
        let before = log.log_end_offset();
        if log.append(data).is_ok() {
            let read = log.read(before, usize::MAX).expect("what was appended reads back");
            assert!(sluice_log::batch::split_batches(&read.bytes).is_ok());
        } else {
            assert_eq!(log.log_end_offset(), before, "a refused append writes nothing");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
});
