//! The fencing file of `examples/floating_ip.rs --fence-file`.

#[path = "../examples/support/fence.rs"]
mod fence;

use fence::Fence;

#[test]
fn the_fence_refuses_a_term_older_than_the_last_admitted() {
    let dir = std::env::temp_dir().join(format!("les-fence-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fence = Fence {
        path: dir.join("term"),
    };
    fence.admit(1, "a:1").unwrap();
    fence.admit(3, "b:1").unwrap();
    fence
        .admit(3, "b:1")
        .expect("the same leader again is fine");
    let err = fence.admit(2, "a:1").unwrap_err();
    assert!(
        err.contains("term 2 refused") && err.contains("term 3"),
        "{err}"
    );
    let log = std::fs::read_to_string(&fence.path).unwrap();
    assert_eq!(log, "1 a:1\n3 b:1\n3 b:1\n");
    std::fs::remove_dir_all(&dir).unwrap();
}
