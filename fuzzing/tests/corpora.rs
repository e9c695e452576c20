//! Replays every committed corpus input of the fuzz targets (`fuzz/corpus/<target>/`)
//! through the same checks the fuzzer ran, so that CI keeps every case it found.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::path::PathBuf;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "the corpus of {target} is committed at {}: {e}",
            dir.display()
        )
    });
    let mut count = 0;
    for entry in entries {
        let path = entry.expect("a corpus entry").path();
        let data = std::fs::read(&path).expect("a corpus file");
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target}: {} fails", path.display());
        count += 1;
    }
    assert!(count > 0, "the corpus of {target} is empty");
    eprintln!("{target}: replayed {count} inputs");
}

#[test]
fn client_frame_corpus() {
    replay("client_frame", chatroom_fuzzing::client_frame);
}

#[test]
fn names_corpus() {
    replay("names", chatroom_fuzzing::names);
}

#[test]
fn driver_corpus() {
    replay("driver", chatroom_fuzzing::driver);
}
