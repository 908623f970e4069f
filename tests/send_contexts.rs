//! The sound route from `Send` contexts: an `AsyncDef` never moves between threads; it is
//! created and polled on a thread that stays put, and a `Send` handle carries its result back.
//! Checked from `tokio::spawn` on a multi-threaded runtime, from axum handlers, and from tasks
//! of smol's multi-threaded `Executor` through a `LocalExecutor` on a thread of its own.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    thread::{self, ThreadId},
    time::Duration,
};

use awaitlet::{async_def, awaitlet};
use tokio_util::task::LocalPoolHandle;

/// Synchronous code that waits twice and reports the thread it ran on, before and after.
fn double_slowly(number: u32) -> (u32, ThreadId, ThreadId) {
    let before = thread::current().id();
    awaitlet(tokio::time::sleep(Duration::from_millis(1)));
    awaitlet(tokio::task::yield_now());
    (number * 2, before, thread::current().id())
}

#[test]
fn tokio_spawn_on_a_multi_thread_runtime_reaches_async_defs_through_a_pinned_pool() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pool = LocalPoolHandle::new(2);
    let tasks: Vec<_> = (0..64)
        .map(|number| {
            let pool = pool.clone();
            // The spawned future is Send: it holds the pool handle and a JoinHandle, never the
            // AsyncDef, which the pool thread creates.
            runtime.spawn(async move {
                pool.spawn_pinned(move || async_def(move || double_slowly(number)))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut pool_threads = Vec::new();
    for (number, task) in (0..).zip(tasks) {
        let (doubled, before, after) = runtime.block_on(task).unwrap();
        assert_eq!(doubled, number * 2);
        assert_eq!(before, after, "the AsyncDef moved between threads");
        assert_ne!(before, thread::current().id());
        if !pool_threads.contains(&before) {
            pool_threads.push(before);
        }
    }
    assert!(pool_threads.len() <= 2, "{pool_threads:?}");
}

#[test]
fn a_panic_in_the_sync_code_reaches_the_send_caller_as_a_join_error() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pool = LocalPoolHandle::new(1);
    let outcome = runtime.block_on(runtime.spawn(async move {
        pool.spawn_pinned(|| {
            async_def(|| {
                awaitlet(tokio::task::yield_now());
                panic!("the sync code failed");
            })
        })
        .await
    }));
    let join_error = outcome.unwrap().unwrap_err();
    assert!(join_error.is_panic());
    let payload = join_error.into_panic();
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"the sync code failed")
    );
}

// ---------------------------------------------------------------------------------------------
// axum
// ---------------------------------------------------------------------------------------------

/// One HTTP/1.1 GET over a fresh connection: the status code and the body.
async fn http_get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// Sync code an axum handler calls: looks a word up, waiting on a tokio timer per letter.
fn spell(word: &str) -> String {
    word.chars()
        .map(|letter| {
            awaitlet(tokio::time::sleep(Duration::from_micros(10)));
            letter.to_ascii_uppercase().to_string()
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[test]
fn axum_handlers_call_sync_code_through_a_pinned_pool() {
    use axum::{
        Router,
        extract::{Path, State},
        routing::get,
    };

    async fn handler(State(pool): State<LocalPoolHandle>, Path(word): Path<String>) -> String {
        pool.spawn_pinned(move || async_def(move || spell(&word)))
            .await
            .unwrap()
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let app = Router::new()
            .route("/spell/{word}", get(handler))
            .with_state(LocalPoolHandle::new(2));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        let mut requests = tokio::task::JoinSet::new();
        for word in ["tokio", "axum", "greenlet", "pool"].repeat(10) {
            requests
                .spawn(async move { (word, http_get(address, &format!("/spell/{word}")).await) });
        }
        let mut answered = 0;
        while let Some(result) = requests.join_next().await {
            let (word, (status, body)) = result.unwrap();
            assert_eq!(status, 200);
            let expected: Vec<String> = word
                .chars()
                .map(|c| c.to_ascii_uppercase().to_string())
                .collect();
            assert_eq!(body, expected.join("-"));
            answered += 1;
        }
        assert_eq!(answered, 40);
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(20), server)
            .await
            .expect("the server did not stop")
            .unwrap()
            .unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// smol and async-executor: a LocalExecutor on a thread of its own, fed through a channel
// ---------------------------------------------------------------------------------------------

/// A job for the pinned thread: creates its (non-`Send`) future there.
type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// A thread running a `LocalExecutor`, spawning each job it receives: the smol (and
/// async-executor) counterpart of tokio-util's pinned pool.
struct PinnedThread {
    jobs: smol::channel::Sender<Job>,
    thread: thread::JoinHandle<()>,
}

impl PinnedThread {
    fn start() -> PinnedThread {
        let (jobs, incoming) = smol::channel::unbounded::<Job>();
        let thread = thread::spawn(move || {
            let executor = async_executor::LocalExecutor::new();
            // Runs until every sender is gone, then finishes the jobs still running.
            smol::block_on(executor.run(async {
                while let Ok(job) = incoming.recv().await {
                    executor.spawn(job()).detach();
                }
            }));
            while !executor.is_empty() {
                smol::block_on(executor.tick());
            }
        });
        PinnedThread { jobs, thread }
    }

    /// Runs `f` in an `async_def` on the pinned thread; the returned future is `Send`.
    fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> impl Future<Output = R> + Send + 'static {
        let (reply, answer) = smol::channel::bounded(1);
        let job: Job = Box::new(move || {
            Box::pin(async move {
                let result = async_def(f).await;
                let _ = reply.send(result).await;
            })
        });
        let jobs = self.jobs.clone();
        async move {
            jobs.send(job).await.expect("the pinned thread stopped");
            answer.recv().await.expect("the job panicked")
        }
    }
}

#[test]
fn smol_executor_tasks_reach_async_defs_through_a_local_executor_thread() {
    let pinned = PinnedThread::start();
    let pinned_thread = pinned.thread.thread().id();
    let executor = Arc::new(smol::Executor::new());
    let results = Arc::new(Mutex::new(Vec::new()));

    // Two worker threads run the multi-threaded executor, whose tasks must be Send.
    let (stop, stopped) = smol::channel::unbounded::<()>();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let executor = executor.clone();
            let stopped = stopped.clone();
            thread::spawn(move || smol::block_on(executor.run(stopped.recv())))
        })
        .collect();

    let tasks: Vec<_> = (0..32u32)
        .map(|number| {
            let call = pinned.run(move || {
                let before = thread::current().id();
                awaitlet(smol::Timer::after(Duration::from_millis(1)));
                awaitlet(smol::future::yield_now());
                (number * 3, before, thread::current().id())
            });
            let results = results.clone();
            executor.spawn(async move {
                let outcome = call.await;
                results.lock().unwrap().push(outcome);
            })
        })
        .collect();
    smol::block_on(async {
        for task in tasks {
            task.await;
        }
    });
    drop(stop);
    for worker in workers {
        assert!(worker.join().unwrap().is_err(), "the stop channel closed");
    }
    drop(pinned.jobs);
    pinned.thread.join().unwrap();

    let mut results = results.lock().unwrap().clone();
    results.sort_by_key(|result| result.0);
    assert_eq!(results.len(), 32);
    for (number, (tripled, before, after)) in (0..).zip(results) {
        assert_eq!(tripled, number * 3);
        assert_eq!(before, pinned_thread);
        assert_eq!(after, pinned_thread);
    }
}
