//! `chatroom-load`: a load generator for chat servers speaking PROTOCOL.md.
//!
//! ```text
//! chatroom-load burst  --addr 127.0.0.1:8080 [--pid P] --rooms 1 --clients 100 --senders 1 --messages 2000
//! chatroom-load steady --addr 127.0.0.1:8080 [--pid P] --rooms 10 --clients 50 --rate 200 --seconds 10
//! chatroom-load idle   --addr 127.0.0.1:8080 [--pid P] --connections 10000 --rooms 1000 --seconds 30
//! chatroom-load churn  --addr 127.0.0.1:8080 [--pid P] --cycles 2000 --concurrency 10
//! chatroom-load soak   --addr 127.0.0.1:8080 [--pid P] --seconds 600 --warmup-ms 30000
//!                      --rooms 40 --members 10
//!                      --send-every-ms 2000 --action-every-ms 20000 --pause-ms 2000
//!                      --churners 8 --churn-pause-ms 200 --bursters 2
//!                      --stall-every-ms 10000 --stall-bound-ms 45000
//!                      --settle-ms 60000 --sample-every-ms 60000
//! chatroom-load abuse  --addr 127.0.0.1:8080 --members 500 --senders 20 --rate 100 --seconds 20
//!                      --http 200 --churners 200 --nonreaders 100
//! ```
//!
//! `--threads N` sets the generator's worker threads (default 2). For a cluster,
//! `--addr` takes a comma-separated list of nodes (connections go round-robin over
//! them) and `--pid` a list of processes whose CPU counts as the server's (every node
//! and the Redis server).
//! Prints a table, then one line of JSON. Targets loopback addresses only.

use std::collections::HashMap;
use std::process::ExitCode;

use std::time::Duration;

use chatroom_benches::{
    AbusePlan, MORE, Scenario, SoakPlan, Target, check_target, raise_fd_limit, run,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((scenario, rest)) = args.split_first() else {
        eprintln!(
            "usage: chatroom-load burst|steady|idle|churn|soak|abuse --addr HOST:PORT [--pid PID] [options]"
        );
        return ExitCode::from(2);
    };
    let mut opts: HashMap<&str, &str> = HashMap::new();
    for pair in rest.chunks(2) {
        match pair {
            [k, v] if k.starts_with("--") => {
                opts.insert(&k[2..], v);
            }
            _ => {
                eprintln!("chatroom-load: options come in pairs: --name value");
                return ExitCode::from(2);
            }
        }
    }
    let num = |k: &str, d: u32| -> Result<u32, String> {
        opts.get(k).map_or(Ok(d), |v| {
            v.parse().map_err(|_| format!("--{k} {v}: not a number"))
        })
    };
    let parsed = (|| -> Result<(Scenario, Target, u32), String> {
        let mut addrs = Vec::new();
        for a in opts.get("addr").unwrap_or(&"127.0.0.1:8080").split(',') {
            let addr = a
                .trim()
                .parse()
                .map_err(|_| format!("--addr: {a} is not HOST:PORT"))?;
            check_target(addr)?;
            addrs.push(addr);
        }
        let mut pids = Vec::new();
        for p in opts.get("pid").map(|p| p.split(',')).into_iter().flatten() {
            pids.push(
                p.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("--pid: {p} is not a number"))?,
            );
        }
        if addrs.len() > MORE + 1 || pids.len() > MORE + 1 {
            return Err(format!("at most {} addresses and pids", MORE + 1));
        }
        let mut target = Target::new(addrs[0], pids.first().copied());
        for (slot, addr) in target.also.iter_mut().zip(&addrs[1..]) {
            *slot = Some(*addr);
        }
        for (slot, pid) in target.also_pids.iter_mut().zip(pids.iter().skip(1)) {
            *slot = Some(*pid);
        }
        let scenario = match scenario.as_str() {
            "burst" => Scenario::Burst {
                rooms: num("rooms", 1)?,
                clients: num("clients", 100)?,
                senders: num("senders", 1)?,
                messages: num("messages", 2000)?,
            },
            "steady" => Scenario::Steady {
                rooms: num("rooms", 10)?,
                clients: num("clients", 50)?,
                rate: num("rate", 200)?,
                seconds: num("seconds", 10)?,
            },
            "idle" => Scenario::Idle {
                connections: num("connections", 10_000)?,
                rooms: num("rooms", 1000)?,
                seconds: num("seconds", 30)?,
            },
            "churn" => Scenario::Churn {
                cycles: num("cycles", 2000)?,
                concurrency: num("concurrency", 10)?,
            },
            "soak" => {
                let d = SoakPlan::default();
                let ms = |k: &str, d: Duration| -> Result<Duration, String> {
                    let default = u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
                    Ok(Duration::from_millis(u64::from(num(k, default)?)))
                };
                Scenario::Soak(SoakPlan {
                    seconds: num("seconds", d.seconds)?,
                    warmup: ms("warmup-ms", d.warmup)?,
                    rooms: num("rooms", d.rooms)?,
                    members: num("members", d.members)?,
                    send_every: ms("send-every-ms", d.send_every)?,
                    action_every: ms("action-every-ms", d.action_every)?,
                    pause: ms("pause-ms", d.pause)?,
                    churners: num("churners", d.churners)?,
                    churn_pause: ms("churn-pause-ms", d.churn_pause)?,
                    bursters: num("bursters", d.bursters)?,
                    stall_every: ms("stall-every-ms", d.stall_every)?,
                    stall_bound: ms("stall-bound-ms", d.stall_bound)?,
                    settle: ms("settle-ms", d.settle)?,
                    sample_every: ms("sample-every-ms", d.sample_every)?,
                })
            }
            "abuse" => {
                let d = AbusePlan::default();
                Scenario::Abuse(AbusePlan {
                    members: num("members", d.members)?,
                    senders: num("senders", d.senders)?,
                    rate: num("rate", d.rate)?,
                    seconds: num("seconds", d.seconds)?,
                    http: num("http", d.http)?,
                    churners: num("churners", d.churners)?,
                    nonreaders: num("nonreaders", d.nonreaders)?,
                })
            }
            other => return Err(format!("unknown scenario {other}")),
        };
        // The generator's own worker threads (it shares the machine with the server).
        let threads = num("threads", 2)?.max(1);
        Ok((scenario, target, threads))
    })();
    let (scenario, target, threads) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("chatroom-load: {e}");
            return ExitCode::from(2);
        }
    };
    let limit = raise_fd_limit(1_100_000);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads as usize)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chatroom-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "chatroom-load: {scenario:?} against {} (open-file limit {limit})",
        target.addr
    );
    let report = runtime.block_on(run(&scenario, target));
    print!("{}", report.table());
    println!("{}", serde_json::to_string(&report).unwrap_or_default());
    ExitCode::SUCCESS
}
