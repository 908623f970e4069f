use awaitlet::{Greenlet, GreenletExit, SwitchError, getcurrent};
use std::cell::RefCell;
use std::rc::Rc;

#[test]
fn ping_pong_and_return_to_parent() {
    let main = getcurrent();
    let g = Greenlet::new(move |x: i32| {
        let y: i32 = main.switch(x + 1).unwrap();
        y * 10
    });
    assert_eq!(g.switch::<i32, i32>(1).unwrap(), 2);
    assert!(g.is_active() && !g.is_dead());
    assert_eq!(g.switch::<i32, i32>(5).unwrap(), 50);
    assert!(g.is_dead());
    // Rule 21: a dead greenlet's switch goes to its nearest live ancestor: us.
    assert_eq!(g.switch::<&str, &str>("v").unwrap(), "v");
}

#[test]
fn panic_reaches_parent() {
    let g = Greenlet::new(|()| -> () { panic!("inner boom") });
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.switch::<(), ()>(())));
    assert_eq!(
        *caught.unwrap_err().downcast::<&str>().unwrap(),
        "inner boom"
    );
    assert!(g.is_dead());
}

struct Flag(Rc<RefCell<Vec<&'static str>>>, &'static str);
impl Drop for Flag {
    fn drop(&mut self) {
        self.0.borrow_mut().push(self.1);
    }
}

#[test]
fn kill_on_drop_runs_destructors() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let inner = Rc::clone(&log);
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        let _f = Flag(inner, "unwound");
        main.switch::<(), ()>(()).unwrap();
    });
    g.switch::<(), ()>(()).unwrap();
    assert!(log.borrow().is_empty());
    drop(g);
    assert_eq!(*log.borrow(), ["unwound"]);
}

#[test]
fn kill_returns_exit_to_parent() {
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        main.switch::<(), ()>(()).unwrap();
    });
    g.switch::<(), ()>(()).unwrap();
    assert!(matches!(
        g.throw::<()>(GreenletExit::default()),
        Err(SwitchError::Exited(_))
    ));
    assert!(g.is_dead());
}

#[test]
fn nested_three_levels() {
    let outer = Greenlet::new(|n: u32| {
        let middle = Greenlet::new(|n: u32| {
            let inner = Greenlet::new(|n: u32| n + 100);
            inner.switch::<u32, u32>(n).unwrap() + 10
        });
        middle.switch::<u32, u32>(n).unwrap() + 1
    });
    assert_eq!(outer.switch::<u32, u32>(0).unwrap(), 111);
}

#[test]
fn many_switches() {
    let main = getcurrent();
    let g = Greenlet::new(move |mut x: u64| {
        loop {
            x = main.switch(x + 1).unwrap();
        }
    });
    let mut v = 0u64;
    for _ in 0..100_000 {
        v = g.switch(v).unwrap();
    }
    assert_eq!(v, 100_000);
}
