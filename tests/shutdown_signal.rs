//! `les::daemon::shutdown_signal` resolves on SIGTERM and SIGINT, so an embedding
//! program leaves gracefully under `systemctl stop` as under Ctrl-C. Its own test
//! binary: the signals go to this whole process.

use std::time::Duration;

#[tokio::test]
async fn sigterm_and_sigint_each_resolve_the_shutdown_future_with_their_name() {
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let stop = les::daemon::shutdown_signal().expect("install the handlers");
        // SAFETY: raise(3) of a signal whose handler tokio has just installed.
        unsafe {
            libc::raise(sig);
        }
        let got = tokio::time::timeout(Duration::from_secs(5), stop)
            .await
            .expect("resolves");
        assert_eq!(got, name);
    }
}
