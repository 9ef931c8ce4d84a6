//! A library user's durable receive: a `Fetcher` over a `DurableFile`
//! whose process "dies" part way (the fetcher and the file dropped after a
//! connection broke), then a new `DurableFile::open` and
//! `Fetcher::restore` that continue over new connections to the same
//! `Server`; the output is byte-identical, and what was kept was not sent
//! again.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use proto_stream::session::{
    DropEvery, DurableFile, FetchConfig, Fetcher, Server, ServerConfig, KIT_FORMATS,
};

fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "proto-stream-durable-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_fetcher_restored_from_a_durable_file_finishes_the_same_stream() {
    let want = include_bytes!("../testdata/native/data-v1.stream").to_vec();
    let dir = temp("restore");
    let out = dir.join("out.stream");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let file = want.clone();
    let server = std::thread::spawn(move || {
        let config = ServerConfig {
            // Acks often, so that something is durable early.
            window: proto_stream::session::replay::Limits {
                max_bytes: 64 * 1024,
                max_messages: 64,
            },
            ..ServerConfig::default()
        };
        let mut server = Server::from_bytes(file, config).unwrap();
        for conn in listener.incoming() {
            let conn = conn.unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            if server.serve(conn).is_ok() {
                return;
            }
        }
    });
    let connect = || {
        let c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c
    };

    // The first receiver: its only connection drops after 150 KB.
    let (file, kept) = DurableFile::open(&out, Duration::from_secs(5)).unwrap();
    assert!(kept.is_none());
    let mut f = Fetcher::new(file, FetchConfig::default());
    assert!(f.fetch(DropEvery::new(connect(), 150_000)).is_err());
    let held = f.kept();
    assert!(held.len > 0 && held.len < want.len() as u64, "{}", held.len);
    drop(f);

    // A new one: it resumes where the state says.
    let (file, kept) = DurableFile::open(&out, Duration::from_secs(5)).unwrap();
    let kept = kept.expect("the state was kept");
    assert!(kept.len > 0 && kept.len <= held.len);
    assert_eq!(kept.check.map(|c| c.offset), Some(kept.len));
    // Both ways to go on: resumed from the kept check state, and checked
    // again from the bytes; they agree.
    let again = file.revalidate(&KIT_FORMATS, kept.len).unwrap();
    assert_eq!(again.state(), kept.check);
    let check = file.resume_check(&KIT_FORMATS, &kept).unwrap();
    assert_eq!(check.state(), kept.check);
    let from = kept.len;
    let mut f = Fetcher::restore(check, file, FetchConfig::default(), kept);
    f.fetch(connect()).unwrap();
    assert!(f.done());
    let stats = f.stats();
    assert_eq!(f.resumed_from(), from);
    // Nothing it held durably came again.
    assert_eq!(stats.receive.bytes_delivered, want.len() as u64 - from);
    let path = f.into_inner().finish().unwrap();
    assert_eq!(path, out);
    assert!(std::fs::read(&out).unwrap() == want);
    server.join().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
