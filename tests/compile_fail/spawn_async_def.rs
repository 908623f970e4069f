// `tokio::spawn(async_def(..))` on a multi-threaded runtime: the future must be `Send`, and
// the first type the compiler names is the public marker that says why it is not.
fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let handle = tokio::spawn(awaitlet::async_def(|| 1));
        assert_eq!(handle.await.unwrap(), 1);
    });
}
