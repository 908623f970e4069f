//! An axum server on a multi-threaded runtime whose handlers call an unchanged synchronous
//! library through `async_def`, on tokio-util's pinned pool.
//!
//! `wiki` below is the synchronous library: it renders pages that include other pages
//! (`{{include name}}`, to any depth) and checks edits, and it reaches its storage only through
//! the `PageStore` trait. The server implements that trait with `awaitlet`, over an async
//! storage task reached through channels, so a page load suspends the library's whole call
//! stack, mid-render, while the storage answers.
//!
//! axum's handlers must be `Send` futures and an `AsyncDef` is not (its suspended stack stays on
//! its thread). So each handler hands the call to `LocalPoolHandle::spawn_pinned`: the
//! `AsyncDef` is created and polled on one pool thread, and the `Send` `JoinHandle` carries the
//! result back to the handler.
//!
//! The program serves on 127.0.0.1 (an OS-chosen port), sends its own requests over raw
//! HTTP/1.1, checks every response, prints a summary and exits with 0.
//!
//! ```sh
//! cargo run --release --example axum
//! ```

use std::{collections::HashMap, time::Instant};

use awaitlet::{async_def, awaitlet};
use axum::{
    Router,
    extract::{Path, State},
    http::StatusCode,
    routing::get,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::{mpsc, oneshot},
};
use tokio_util::task::LocalPoolHandle;

/// The synchronous library, as it would be on crates.io: no async, no tokio.
mod wiki {
    use std::fmt;

    /// Where pages live. The library neither knows nor cares how.
    pub(crate) trait PageStore {
        fn load(&mut self, name: &str) -> Option<String>;
        fn save(&mut self, name: &str, text: &str);
    }

    #[derive(Debug, PartialEq)]
    pub(crate) enum WikiError {
        NotFound(String),
        IncludeCycle(String),
        InvalidName(String),
    }

    impl fmt::Display for WikiError {
        fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                WikiError::NotFound(name) => write!(formatter, "no page named {name:?}"),
                WikiError::IncludeCycle(name) => write!(formatter, "{name:?} includes itself"),
                WikiError::InvalidName(name) => write!(formatter, "{name:?} is not a page name"),
            }
        }
    }

    /// Renders `name`: its text, with each `{{include other}}` replaced by `other` rendered.
    pub(crate) fn render(store: &mut dyn PageStore, name: &str) -> Result<String, WikiError> {
        let mut including = Vec::new();
        render_into(store, name, &mut including)
    }

    fn render_into(
        store: &mut dyn PageStore,
        name: &str,
        including: &mut Vec<String>,
    ) -> Result<String, WikiError> {
        if including.iter().any(|outer| outer == name) {
            return Err(WikiError::IncludeCycle(name.to_string()));
        }
        let text = store
            .load(name)
            .ok_or_else(|| WikiError::NotFound(name.to_string()))?;
        including.push(name.to_string());
        let mut rendered = String::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("{{include ") {
            rendered.push_str(&rest[..start]);
            let after = &rest[start + "{{include ".len()..];
            let end = after.find("}}").unwrap_or(after.len());
            rendered.push_str(&render_into(store, after[..end].trim(), including)?);
            rest = after.get(end + 2..).unwrap_or("");
        }
        rendered.push_str(rest);
        including.pop();
        Ok(rendered)
    }

    /// Saves `text` as `name` after checking the name.
    pub(crate) fn edit(store: &mut dyn PageStore, name: &str, text: &str) -> Result<(), WikiError> {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|character| character.is_ascii_alphanumeric() || character == '-');
        if !valid {
            return Err(WikiError::InvalidName(name.to_string()));
        }
        store.save(name, text);
        Ok(())
    }
}

/// A request to the storage task.
enum StorageRequest {
    Load(String, oneshot::Sender<Option<String>>),
    Save(String, String, oneshot::Sender<()>),
}

/// The async storage: a task owning the pages on the runtime's workers, answering through
/// channels, as a database client or a remote store would.
async fn storage_task(mut requests: mpsc::Receiver<StorageRequest>) {
    let mut pages: HashMap<String, String> = HashMap::new();
    while let Some(request) = requests.recv().await {
        match request {
            StorageRequest::Load(name, reply) => {
                let _ = reply.send(pages.get(&name).cloned());
            }
            StorageRequest::Save(name, text, reply) => {
                pages.insert(name, text);
                let _ = reply.send(());
            }
        }
    }
}

/// The library's `PageStore`, implemented over the async storage with `awaitlet`: this is the
/// only place that knows about async.
struct ChannelStore {
    storage: mpsc::Sender<StorageRequest>,
}

impl wiki::PageStore for ChannelStore {
    fn load(&mut self, name: &str) -> Option<String> {
        let (reply, answer) = oneshot::channel();
        awaitlet(
            self.storage
                .send(StorageRequest::Load(name.to_string(), reply)),
        )
        .expect("the storage task stopped");
        awaitlet(answer).expect("the storage task stopped")
    }

    fn save(&mut self, name: &str, text: &str) {
        let (reply, answer) = oneshot::channel();
        let request = StorageRequest::Save(name.to_string(), text.to_string(), reply);
        awaitlet(self.storage.send(request)).expect("the storage task stopped");
        awaitlet(answer).expect("the storage task stopped");
    }
}

#[derive(Clone)]
struct AppState {
    pool: LocalPoolHandle,
    storage: mpsc::Sender<StorageRequest>,
}

fn error_status(error: &wiki::WikiError) -> StatusCode {
    match error {
        wiki::WikiError::NotFound(_) => StatusCode::NOT_FOUND,
        wiki::WikiError::IncludeCycle(_) => StatusCode::UNPROCESSABLE_ENTITY,
        wiki::WikiError::InvalidName(_) => StatusCode::BAD_REQUEST,
    }
}

/// `GET /pages/{name}`: the library renders the page on a pool thread.
async fn show_page(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> (StatusCode, String) {
    let storage = state.storage.clone();
    let rendered = state
        .pool
        .spawn_pinned(move || async_def(move || wiki::render(&mut ChannelStore { storage }, &name)))
        .await
        .expect("the render panicked");
    match rendered {
        Ok(page) => (StatusCode::OK, page),
        Err(error) => (error_status(&error), error.to_string()),
    }
}

/// `PUT /pages/{name}`: the library checks and saves the page on a pool thread.
async fn edit_page(
    State(state): State<AppState>,
    Path(name): Path<String>,
    text: String,
) -> (StatusCode, String) {
    let storage = state.storage.clone();
    let edited = state
        .pool
        .spawn_pinned(move || {
            async_def(move || wiki::edit(&mut ChannelStore { storage }, &name, &text))
        })
        .await
        .expect("the edit panicked");
    match edited {
        Ok(()) => (StatusCode::NO_CONTENT, String::new()),
        Err(error) => (error_status(&error), error.to_string()),
    }
}

/// One HTTP/1.1 request over a fresh connection: the status code and the body.
async fn request(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(body.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("no end of headers");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("no status code");
    (status, body.to_string())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (storage, requests) = mpsc::channel(64);
    tokio::spawn(storage_task(requests));
    let state = AppState {
        pool: LocalPoolHandle::new(2),
        storage,
    };
    let app = Router::new()
        .route("/pages/{name}", get(show_page).put(edit_page))
        .with_state(state);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    println!("serving on http://{address}");

    // Pages that include each other three levels deep, each edit going through the library.
    let pages = [
        ("footer", "(c) the wiki"),
        ("menu", "[home] [about]"),
        ("header", "{{include menu}} |"),
        ("about", "{{include header}} about us. {{include footer}}"),
        ("home", "{{include header}} welcome! {{include footer}}"),
        ("loop", "a {{include loop}}"),
    ];
    for (name, text) in pages {
        let (status, body) = request(address, "PUT", &format!("/pages/{name}"), text).await;
        assert_eq!(status, 204, "PUT {name}: {body}");
    }
    let (status, _) = request(address, "PUT", "/pages/bad%20name", "text").await;
    assert_eq!(status, 400, "an invalid name must be refused");

    // Many concurrent renders: each is an AsyncDef on a pool thread, suspended at each load.
    let expected = [
        ("/pages/home", 200, "[home] [about] | welcome! (c) the wiki"),
        (
            "/pages/about",
            200,
            "[home] [about] | about us. (c) the wiki",
        ),
        ("/pages/missing", 404, "no page named \"missing\""),
        ("/pages/loop", 422, "\"loop\" includes itself"),
    ];
    let rounds = 1_000;
    let started = Instant::now();
    // At most 32 connections at once, as a client's connection pool would allow.
    let connections = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let mut renders = tokio::task::JoinSet::new();
    for round in 0..rounds {
        let (path, status, body) = expected[round % expected.len()];
        let connections = connections.clone();
        renders.spawn(async move {
            let _connection = connections.acquire().await.unwrap();
            let response = request(address, "GET", path, "").await;
            assert_eq!(response, (status, body.to_string()), "GET {path}");
        });
    }
    let mut checked = 0;
    while let Some(result) = renders.join_next().await {
        result.expect("a response was wrong");
        checked += 1;
    }
    let elapsed = started.elapsed();

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    println!(
        "7 PUTs and {checked} GETs (32 at a time) checked, each rendering with 1 to 4 page loads \
         through awaitlet: GETs in {elapsed:.2?}, {:.0} requests/s",
        checked as f64 / elapsed.as_secs_f64()
    );
    println!("all responses as expected");
}
