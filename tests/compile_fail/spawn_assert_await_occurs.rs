// The same for `assert_await_occurs()`: the marker comes first.
fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let future = awaitlet::async_def(|| 1).assert_await_occurs();
        let handle = tokio::spawn(future);
        assert_eq!(handle.await.unwrap(), Ok(1));
    });
}
