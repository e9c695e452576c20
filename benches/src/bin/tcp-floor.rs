//! `tcp-floor`: what one small write to a loopback TCP socket costs on this machine,
//! with no WebSocket, no chat server and no async runtime on the writing side.
//!
//! It opens `rooms × clients` loopback connections and, like the `steady` scenario,
//! writes one ~120-byte frame to each of the `clients` sockets of a room, for one room
//! after another, at `rate` messages per second per room for `seconds` seconds. One
//! plain thread does every write (blocking sockets, `TCP_NODELAY`, as a chat server
//! has them); a tokio runtime on other threads reads and discards. It prints the
//! writing thread's CPU seconds (user + system, from /proc/thread-self/stat) per
//! million writes and the write-to-read latency (then the same as one line of JSON): the kernel's share of the server CPU per delivery in `steady`,
//! which no server that sends each delivery as its own segment can go below.
//!
//! With `cycles` first, it measures the floor of the `churn` scenario instead: each
//! cycle connects, makes `exchanges` request/response round trips of ~100 bytes (a
//! churn cycle has five: upgrade, join, send, leave, close) and disconnects, with
//! `concurrency` cycles at a time; both ends run in this process on a 2-thread tokio
//! runtime, so the CPU per cycle it prints compares with the server's plus the load
//! generator's CPU per churn cycle.
//!
//! ```text
//! tcp-floor [--rooms 10] [--clients 50] [--rate 200] [--seconds 10]
//! tcp-floor cycles [--cycles 20000] [--concurrency 10] [--exchanges 5]
//! ```
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chatroom_benches::stat_cpu_seconds;
use hdrhistogram::Histogram;
use tokio::io::AsyncReadExt;

fn thread_cpu_seconds() -> Option<f64> {
    stat_cpu_seconds("/proc/thread-self/stat")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str, default: u64| -> Result<u64, String> {
        match args.iter().position(|a| a == &format!("--{name}")) {
            None => Ok(default),
            Some(i) => args
                .get(i + 1)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("--{name} needs a number")),
        }
    };
    if args.first().is_some_and(|a| a == "cycles") {
        let parsed = (|| {
            Ok::<_, String>((
                opt("cycles", 20_000)?,
                opt("concurrency", 10)?,
                opt("exchanges", 5)?,
            ))
        })();
        return match parsed
            .map_err(std::io::Error::other)
            .and_then(|(c, n, x)| cycles(c, n.max(1), x))
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tcp-floor: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let parsed = (|| {
        Ok::<_, String>((
            opt("rooms", 10)?,
            opt("clients", 50)?,
            opt("rate", 200)?,
            opt("seconds", 10)?,
        ))
    })();
    let (rooms, clients, rate, seconds) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("tcp-floor: {e}");
            return ExitCode::from(2);
        }
    };
    match run(rooms, clients, rate.max(1), seconds) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcp-floor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn process_cpu_seconds() -> Option<f64> {
    stat_cpu_seconds("/proc/self/stat")
}

/// Connect, `exchanges` round trips of 100 bytes, disconnect; `concurrency` at a time.
fn cycles(total: u64, concurrency: u64, exchanges: u64) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = s.set_nodelay(true);
                    let mut buf = [0u8; 100];
                    while s.read_exact(&mut buf).await.is_ok() {
                        if s.write_all(&buf).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let cpu_before = process_cpu_seconds();
        let start = Instant::now();
        let mut workers = Vec::new();
        for w in 0..concurrency {
            let share = total / concurrency + u64::from(w < total % concurrency);
            workers.push(tokio::spawn(async move {
                let mut done = 0u64;
                for _ in 0..share {
                    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                        break;
                    };
                    let _ = s.set_nodelay(true);
                    let mut buf = [7u8; 100];
                    for _ in 0..exchanges {
                        if s.write_all(&buf).await.is_err() || s.read_exact(&mut buf).await.is_err()
                        {
                            break;
                        }
                    }
                    done += 1;
                }
                done
            }));
        }
        let mut done = 0;
        for w in workers {
            done += w.await.unwrap_or(0);
        }
        let wall = start.elapsed().as_secs_f64();
        let cpu = process_cpu_seconds().zip(cpu_before).map(|(a, b)| a - b);
        println!(
            "cycles              {done} in {wall:.2} s = {:.0} cycles/s",
            done as f64 / wall
        );
        let per_cycle = cpu.map(|cpu| cpu / done.max(1) as f64 * 1e6);
        if let (Some(cpu), Some(us)) = (cpu, per_cycle) {
            println!("CPU (both ends)     {cpu:.2} s = {us:.0} µs per cycle");
        }
        println!(
            r#"{{"floor":"cycles","cycles_per_sec":{:.0},"cpu_us_per_cycle":{}}}"#,
            done as f64 / wall,
            per_cycle.map_or("null".into(), |us| format!("{us:.1}"))
        );
        Ok(())
    })
}

fn run(rooms: u64, clients: u64, rate: u64, seconds: u64) -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut server_side = Vec::new();
    let mut client_side = Vec::new();
    for _ in 0..rooms * clients {
        client_side.push(TcpStream::connect(addr)?);
        let (s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        server_side.push(s);
    }
    // Each frame carries its write time (ns since `origin`, 20 digits, so every frame
    // has the same length) for the readers' latency histogram.
    let origin = Instant::now();
    let frame_at = move |at: Instant| {
        format!(
            r#"{{"type":"message","id":123456,"ts":1764070000123,"from":"c0","text":"{:020}","room":"steady-room-0"}}"#,
            at.duration_since(origin).as_nanos()
        )
    };
    let frame_len = frame_at(origin).len();
    let stamp_at = frame_len - r#"","room":"steady-room-0"}"#.len() - 20;
    // The readers: parse the stamps, on their own runtime and thread, as a load
    // generator would.
    let readers = std::thread::spawn(move || -> std::io::Result<(u64, Histogram<u64>)> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let mut tasks = Vec::new();
            for s in client_side {
                s.set_nonblocking(true)?;
                let mut s = tokio::net::TcpStream::from_std(s)?;
                tasks.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut pending = Vec::new();
                    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                        .map_err(std::io::Error::other)?;
                    let mut total = 0u64;
                    while let Ok(n @ 1..) = s.read(&mut buf).await {
                        let now = origin.elapsed().as_nanos() as u64;
                        total += n as u64;
                        pending.extend_from_slice(&buf[..n]);
                        let whole = pending.len() / frame_len * frame_len;
                        for frame in pending[..whole].chunks_exact(frame_len) {
                            let sent = std::str::from_utf8(&frame[stamp_at..stamp_at + 20])
                                .ok()
                                .and_then(|d| d.parse::<u64>().ok())
                                .unwrap_or(now);
                            let _ = latency.record((now.saturating_sub(sent) / 1000).max(1));
                        }
                        pending.drain(..whole);
                    }
                    Ok::<_, std::io::Error>((total, latency))
                }));
            }
            let mut total = 0;
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .map_err(std::io::Error::other)?;
            for t in tasks {
                if let Ok(Ok((bytes, h))) = t.await {
                    total += bytes;
                    let _ = latency.add(&h);
                }
            }
            Ok((total, latency))
        })
    });
    let period = Duration::from_secs_f64(1.0 / (rate * rooms) as f64);
    let messages = rate * seconds * rooms;
    let cpu_before = thread_cpu_seconds();
    let start = Instant::now();
    let mut writes = 0u64;
    for m in 0..messages {
        let due = start + period * m as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let room = (m % rooms) as usize;
        let members = clients as usize;
        for s in &mut server_side[room * members..(room + 1) * members] {
            s.write_all(frame_at(Instant::now()).as_bytes())?;
            writes += 1;
        }
    }
    let cpu = thread_cpu_seconds().zip(cpu_before).map(|(a, b)| a - b);
    let wall = start.elapsed().as_secs_f64();
    drop(server_side);
    let (received, latency) = readers
        .join()
        .map_err(|_| std::io::Error::other("reader panicked"))??;
    println!("writes              {writes} of {frame_len} bytes in {wall:.2} s");
    println!("bytes received      {received}");
    println!(
        "latency (µs)        p50 {}  p99 {}  p99.9 {}  max {}",
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
        latency.value_at_quantile(0.999),
        latency.max()
    );
    let per_million = cpu.map(|cpu| cpu / writes.max(1) as f64 * 1e6);
    if let (Some(cpu), Some(m)) = (cpu, per_million) {
        println!("writer CPU          {cpu:.2} s = {m:.2} s per million writes");
    }
    println!(
        r#"{{"floor":"writes","writer_cpu_s_per_million":{},"latency_us":[{},{},{},{}]}}"#,
        per_million.map_or("null".into(), |m| format!("{m:.2}")),
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
        latency.value_at_quantile(0.999),
        latency.max()
    );
    Ok(())
}
