//! The unsafe core of the greenlet layer: records, what crosses a switch, the walk to a live
//! receiver, the entry function, and kill-on-drop.
//!
//! # Ownership
//!
//! A [`Record`] is reference counted (`Rc`); [`Greenlet`] handles are the references. Besides the
//! user's handles, references are held by:
//!
//! - each child, to its parent (so a parent outlives its children, as in Python);
//! - the thread, to its main greenlet (released when the thread exits);
//! - a started, unfinished greenlet, to itself: a handle on the root frame of its own stack.
//!   When it finishes, that handle travels in its final message and the receiver drops it.
//!
//! The running greenlet is named by a raw pointer in a thread-local ([`CURRENT`]) that owns no
//! reference: the running greenlet is kept alive by its self-reference (or, for main, by the
//! thread), so a switch touches no reference count at all.
//!
//! A started, suspended, non-main greenlet whose only reference is its self-reference has been
//! abandoned: it is killed (see [`kill_abandoned`]) at the point where that is detected: when
//! its last handle is dropped, or right after it switched away holding no handle to itself.
//!
//! # What crosses a switch
//!
//! The word handed to [`arch::switch`] is the address of a [`Message`] on the sender's stack. The
//! receiver moves the message out (`ptr::read`) before anything else can run; a value inside it
//! is still referenced by address (the sender's frame owns its bytes) until the receiver moves it
//! into a typed local, which it does before anything else can run on the sender's stack.

use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::ptr::NonNull;
use std::rc::Rc;

use super::{Greenlet, GreenletExit, SwitchError, TraceEvent, trace};
use crate::arch::{self, Context};
use crate::stack::Stack;

/// Where a greenlet is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Unstarted,
    Running,
    Suspended,
    Dead,
}

/// How to start, or discard, the closure of an unstarted greenlet (which lives on its stack).
struct Start {
    closure: *mut u8,
    argument: TypeId,
    drop_closure: unsafe fn(*mut u8),
}

/// One greenlet. See the module docs for who owns it.
pub(crate) struct Record {
    /// The greenlet's context: at the top of its stack, or `thread_context` for main.
    context: Cell<NonNull<Context>>,
    /// Main's context (main runs on the thread's own stack); unused by other greenlets.
    thread_context: Context,
    pub(crate) state: Cell<State>,
    pub(crate) parent: RefCell<Option<Greenlet>>,
    start: Cell<Option<Start>>,
    stack: Cell<Option<Stack>>,
    pub(crate) name: Option<std::borrow::Cow<'static, str>>,
    pub(crate) is_main: bool,
    /// The type the greenlet's pending switch asks for (its `run` argument type while unstarted),
    /// written when it suspends: a sender of exactly that type may skip the full message.
    awaiting: Cell<TypeId>,
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Some(start) = self.start.take() {
            // SAFETY: an unstarted greenlet still owns its closure, on its stack (still ours).
            unsafe { (start.drop_closure)(start.closure) };
        }
        if self.is_main {
            // The thread's last greenlet is gone and the thread is exiting (only then is main
            // released): later calls must not find a dangling current greenlet.
            let _ = CURRENT.try_with(|current| current.set(EXITED));
        }
    }
}

/// [`CURRENT`] before the thread has a main greenlet.
const UNINITIALISED: *const Record = std::ptr::null();
/// [`CURRENT`] once the thread's main greenlet is gone (the thread is exiting).
const EXITED: *const Record = std::ptr::dangling();

thread_local! {
    /// The running greenlet. Const-initialised, no destructor: a plain thread-local load.
    static CURRENT: Cell<*const Record> = const { Cell::new(UNINITIALISED) };
    /// The thread's reference to its main greenlet, released when the thread exits.
    static MAIN: MainOwner = const { MainOwner(RefCell::new(None)) };
}

struct MainOwner(RefCell<Option<Greenlet>>);

impl Drop for MainOwner {
    fn drop(&mut self) {
        // Greenlets still alive keep main alive through their parent chains; main's record
        // marks the thread as exited when the last of them goes.
        drop(self.0.borrow_mut().take());
    }
}

/// The running greenlet of this thread (creating the main greenlet on first use).
#[inline(always)]
pub(crate) fn current_record() -> *const Record {
    let current = CURRENT.with(Cell::get);
    if current.addr() <= EXITED.addr() {
        return current_record_slow(current);
    }
    current
}

#[cold]
fn current_record_slow(current: *const Record) -> *const Record {
    assert!(
        current != EXITED,
        "awaitlet: this thread's greenlets are gone (the thread is exiting)"
    );
    let main = Rc::new(Record {
        context: Cell::new(NonNull::dangling()),
        thread_context: Context::for_thread_stack(),
        state: Cell::new(State::Running),
        parent: RefCell::new(None),
        start: Cell::new(None),
        stack: Cell::new(None),
        name: Some("main".into()),
        is_main: true,
        awaiting: Cell::new(TypeId::of::<()>()),
    });
    let pointer = Rc::as_ptr(&main);
    // `thread_context` never moves (the record is in an `Rc` allocation) and lives as long as it.
    main.context.set(NonNull::from(&main.thread_context));
    MAIN.with(|owner| *owner.0.borrow_mut() = Some(Greenlet { record: main }));
    CURRENT.with(|current| current.set(pointer));
    pointer
}

/// A new handle to the record at `record`.
///
/// # Safety
///
/// `record` must point to a live record (one some reference keeps alive).
pub(crate) unsafe fn handle_from_raw(record: *const Record) -> Greenlet {
    // SAFETY: the caller guarantees the record is alive, so its count is at least one.
    unsafe {
        Rc::increment_strong_count(record);
        Greenlet {
            record: Rc::from_raw(record),
        }
    }
}

/// Makes an unstarted greenlet running `run` on `stack`, child of `parent`.
pub(crate) fn new_record<A: 'static, B: 'static, F: FnOnce(A) -> B + 'static>(
    stack: Stack,
    run: F,
    parent: Greenlet,
    name: Option<std::borrow::Cow<'static, str>>,
) -> Rc<Record> {
    // The closure goes at the top of the stack; the first frame starts below it.
    let align = std::mem::align_of::<F>().max(16);
    let closure = (stack.top() as usize - std::mem::size_of::<F>()) & !(align - 1);
    // SAFETY: the top of a fresh (or pooled, unused) stack is ours, and aligned for F.
    unsafe { (closure as *mut F).write(run) };
    unsafe fn drop_closure<F>(closure: *mut u8) {
        // SAFETY: called once, on the closure `new_record` wrote, which was never moved out.
        unsafe { std::ptr::drop_in_place(closure as *mut F) }
    }
    // SAFETY: the region below the closure is free stack, 16-byte aligned at `closure`, and the
    // stack lives in the record as long as the context can run.
    let context = unsafe {
        arch::init(
            closure as *mut u8,
            stack.bottom(),
            entry::<A, B, F>,
            std::ptr::null_mut(),
        )
    };
    Rc::new(Record {
        context: Cell::new(context),
        thread_context: Context::for_thread_stack(),
        state: Cell::new(State::Unstarted),
        parent: RefCell::new(Some(parent)),
        start: Cell::new(Some(Start {
            closure: closure as *mut u8,
            argument: TypeId::of::<A>(),
            drop_closure: drop_closure::<F>,
        })),
        stack: Cell::new(Some(stack)),
        name,
        is_main: false,
        awaiting: Cell::new(TypeId::of::<A>()),
    })
}

/// A value in flight: its bytes stay in the sender's frame until the receiver moves them; so
/// does this description of them (the message carries only its address).
pub(crate) struct ValueRef {
    type_id: TypeId,
    pointer: *mut (),
    into_box: unsafe fn(*mut ()) -> Box<dyn Any>,
    type_name: &'static str,
}

impl ValueRef {
    /// Refers to `value`, which the caller must not touch (nor drop) again.
    #[inline(always)]
    pub(crate) fn new<T: 'static>(value: &mut ManuallyDrop<T>) -> ValueRef {
        // SAFETY: a `ManuallyDrop<T>` is a `T` that will not be dropped by its owner.
        unsafe { ValueRef::from_pointer(&mut **value as *mut T) }
    }

    /// Refers to the `T` at `pointer`.
    ///
    /// # Safety
    ///
    /// `pointer` must point to a valid `T` that its owner neither touches nor drops again, and
    /// that stays in place until the receiver has moved it out.
    #[inline(always)]
    unsafe fn from_pointer<T: 'static>(pointer: *mut T) -> ValueRef {
        unsafe fn into_box<T: 'static>(pointer: *mut ()) -> Box<dyn Any> {
            // SAFETY: `pointer` is the `T` this `ValueRef` was made from, moved out only here.
            Box::new(unsafe { std::ptr::read(pointer as *mut T) })
        }
        ValueRef {
            type_id: TypeId::of::<T>(),
            pointer: pointer as *mut (),
            into_box: into_box::<T>,
            type_name: std::any::type_name::<T>(),
        }
    }

    /// Moves the value out as a `T`, or boxed when it is of another type.
    ///
    /// # Safety
    ///
    /// `value` must point to a live `ValueRef` whose value is still in place.
    #[inline(always)]
    unsafe fn take<T: 'static>(value: *const ValueRef) -> Result<T, (Box<dyn Any>, &'static str)> {
        // SAFETY: the caller guarantees `value` is live and its value in place; it is moved out
        // exactly once, by whichever branch runs.
        unsafe {
            if (*value).type_id == TypeId::of::<T>() {
                Ok(std::ptr::read((*value).pointer as *mut T))
            } else {
                Err((((*value).into_box)((*value).pointer), (*value).type_name))
            }
        }
    }
}

/// What a switch delivers.
pub(crate) enum Payload {
    /// A value owned by the sender's frame, described by a [`ValueRef`] also in that frame.
    Value(*const ValueRef),
    /// A value already boxed (a `GreenletExit` delivered as a value).
    Boxed(Box<dyn Any>),
    /// A panic to raise in the receiver (a `throw`, or a panic propagating to a parent).
    Panic(Box<dyn Any + Send>),
    /// An error for the receiver's pending switch (a start with an argument of the wrong type).
    Failed(Box<SwitchError>),
}

impl Payload {
    fn event(&self) -> TraceEvent {
        match self {
            Payload::Value(_) | Payload::Boxed(_) => TraceEvent::Switch,
            Payload::Panic(_) | Payload::Failed(_) => TraceEvent::Throw,
        }
    }

    fn is_exit(&self) -> bool {
        matches!(self, Payload::Panic(payload) if payload.is::<GreenletExit>())
    }

    /// The `TypeId` of the value this payload carries, if it carries one.
    fn value_type(&self) -> Option<TypeId> {
        match self {
            // SAFETY: a `Value` payload points at a live `ValueRef` while it is in flight.
            Payload::Value(value) => Some(unsafe { (**value).type_id }),
            Payload::Boxed(boxed) => Some((**boxed).type_id()),
            Payload::Panic(_) | Payload::Failed(_) => None,
        }
    }

    /// Moves a carried value into a box (for an error), with its type name when known.
    ///
    /// # Safety
    ///
    /// A `Value` must still be in place.
    unsafe fn into_boxed_value(self) -> Result<(Box<dyn Any>, &'static str), Payload> {
        match self {
            // SAFETY: the caller guarantees the value is in place; it is moved out once.
            Payload::Value(value) => unsafe {
                Ok((((*value).into_box)((*value).pointer), (*value).type_name))
            },
            Payload::Boxed(boxed) => Ok((boxed, "a boxed value")),
            other => Err(other),
        }
    }

    /// Turns the payload into what a pending `switch::<_, R>` returns; a panic is returned as
    /// `Err(Ok(payload))` for the caller to raise once its bookkeeping is done.
    ///
    /// # Safety
    ///
    /// A `Value` must still be in place.
    #[inline(always)]
    unsafe fn receive<R: 'static>(self) -> Result<R, Result<Box<dyn Any + Send>, SwitchError>> {
        let (boxed, found) = match self {
            // SAFETY: the caller guarantees the value is in place.
            Payload::Value(value) => match unsafe { ValueRef::take::<R>(value) } {
                Ok(value) => return Ok(value),
                Err(mismatch) => mismatch,
            },
            Payload::Boxed(boxed) => match boxed.downcast::<R>() {
                Ok(value) => return Ok(*value),
                Err(boxed) => (boxed, "a boxed value"),
            },
            Payload::Panic(payload) => return Err(Ok(payload)),
            Payload::Failed(error) => return Err(Err(*error)),
        };
        Err(Err(match boxed.downcast::<GreenletExit>() {
            Ok(exit) => SwitchError::Exited(*exit),
            Err(value) => SwitchError::WrongType {
                expected: std::any::type_name::<R>(),
                found,
                value,
            },
        }))
    }
}

/// What a switch hands over, on the sender's stack; the switched word is its address.
///
/// Only machine words, each read back with one 8-byte load: the receiver runs right after the
/// sender's stores, which may still sit in the store buffer, and a wider load spanning two of
/// them cannot be forwarded from there (it waits for them to reach the cache, dozens of cycles
/// on every switch).
#[repr(C)]
struct Message {
    kind: usize,
    value: *const ValueRef,
    boxed: *mut dyn Any,
    panic: *mut (dyn Any + Send),
    failed: *mut SwitchError,
    /// The greenlet that sent this message.
    origin: *const Record,
    /// The greenlet it is for (the entry function learns who it is from this).
    target: *const Record,
    /// The sender's self-reference (an `Rc` in raw form) when the sender has just finished.
    dying: *const Record,
}

const KIND_VALUE: usize = 0;
const KIND_BOXED: usize = 1;
const KIND_PANIC: usize = 2;
const KIND_FAILED: usize = 3;

/// A message's contents, back in owned form.
struct Received {
    payload: Payload,
    origin: *const Record,
    target: *const Record,
    dying: Option<Greenlet>,
}

impl Message {
    #[inline(always)]
    fn new(
        payload: Payload,
        origin: *const Record,
        target: *const Record,
        dying: Option<Greenlet>,
    ) -> Message {
        let mut message = Message {
            kind: KIND_VALUE,
            value: std::ptr::null(),
            boxed: std::ptr::null_mut::<()>() as *mut dyn Any,
            panic: std::ptr::null_mut::<()>() as *mut (dyn Any + Send),
            failed: std::ptr::null_mut(),
            origin,
            target,
            dying: dying.map_or(std::ptr::null(), |dying| Rc::into_raw(dying.into_record())),
        };
        match payload {
            Payload::Value(value) => message.value = value,
            Payload::Boxed(boxed) => {
                (message.kind, message.boxed) = (KIND_BOXED, Box::into_raw(boxed))
            }
            Payload::Panic(panic) => {
                (message.kind, message.panic) = (KIND_PANIC, Box::into_raw(panic))
            }
            Payload::Failed(failed) => {
                (message.kind, message.failed) = (KIND_FAILED, Box::into_raw(failed))
            }
        }
        message
    }

    /// Takes the contents of the message at `address`, one word per load.
    ///
    /// # Safety
    ///
    /// `address` must be a message made by [`Message::new`] and not received before.
    #[inline(always)]
    unsafe fn receive(address: usize) -> Received {
        let message = address as *const Message;
        // SAFETY: the caller guarantees a live, unreceived message; each field is read once and
        // its ownership (boxes, the dying reference) moves to the result.
        unsafe {
            let word = |field: *const usize| std::ptr::read_volatile(field);
            let kind = word(&raw const (*message).kind);
            let payload = match kind {
                KIND_VALUE => Payload::Value(
                    word(&raw const (*message).value as *const usize) as *const ValueRef
                ),
                KIND_BOXED => Payload::Boxed(Box::from_raw(std::ptr::read_volatile(
                    &raw const (*message).boxed,
                ))),
                KIND_PANIC => Payload::Panic(Box::from_raw(std::ptr::read_volatile(
                    &raw const (*message).panic,
                ))),
                _ => Payload::Failed(Box::from_raw(word(
                    &raw const (*message).failed as *const usize,
                ) as *mut SwitchError)),
            };
            let dying = word(&raw const (*message).dying as *const usize) as *const Record;
            Received {
                payload,
                origin: word(&raw const (*message).origin as *const usize) as *const Record,
                target: word(&raw const (*message).target as *const usize) as *const Record,
                dying: (!dying.is_null()).then(|| Greenlet {
                    record: Rc::from_raw(dying),
                }),
            }
        }
    }
}

/// Where a payload ends up.
enum Destination {
    /// The running greenlet itself: deliver without switching.
    Here,
    /// A suspended or unstarted greenlet, kept alive by the parent chain of the original target.
    There(*const Record),
}

/// Walks from `target` to the greenlet that actually receives `payload`: dead greenlets pass it
/// to their parents; unstarted ones start if it is a value of their argument type, and
/// otherwise die without running, passing the payload (or the error it became) on upward.
fn resolve(target: &Greenlet, payload: &mut Payload) -> Destination {
    let mut target = target.clone();
    let mut direct = true;
    loop {
        let record = &*target.record;
        match record.state.get() {
            State::Running => return Destination::Here,
            State::Suspended => return Destination::There(Rc::as_ptr(&target.record)),
            State::Dead => {
                // Throwing GreenletExit into a dead greenlet gives it back as a value (rule 30).
                if direct && payload.is_exit() {
                    convert_exit_to_value(payload);
                }
            }
            State::Unstarted => {
                let start = record
                    .start
                    .take()
                    .expect("an unstarted greenlet has its closure");
                if payload.value_type() == Some(start.argument) {
                    record.start.set(Some(start));
                    return Destination::There(Rc::as_ptr(&target.record));
                }
                // It dies without running: its closure is dropped, its stack freed.
                record.state.set(State::Dead);
                // SAFETY: the closure was never started nor moved out.
                unsafe { (start.drop_closure)(start.closure) };
                drop(record.stack.take());
                let taken = std::mem::replace(payload, Payload::Boxed(Box::new(())));
                // SAFETY: a value in the payload is still in place (nothing took it yet).
                *payload = match unsafe { taken.into_boxed_value() } {
                    Ok((value, found)) => {
                        Payload::Failed(Box::new(wrong_start_argument(value, found)))
                    }
                    Err(Payload::Panic(panic)) if panic.is::<GreenletExit>() => {
                        Payload::Boxed(panic)
                    }
                    Err(other) => other,
                };
            }
        }
        direct = false;
        let parent = record.parent.borrow().clone();
        target = parent.expect("the main greenlet is never dead nor unstarted");
    }
}

fn wrong_start_argument(value: Box<dyn Any>, found: &'static str) -> SwitchError {
    SwitchError::WrongType {
        expected: "the argument type of the greenlet's run function",
        found,
        value,
    }
}

fn convert_exit_to_value(payload: &mut Payload) {
    if let Payload::Panic(panic) = std::mem::replace(payload, Payload::Boxed(Box::new(()))) {
        *payload = Payload::Boxed(panic);
    }
}

/// Sends `payload` to `target` (or where the walk leads) and returns what is eventually sent
/// back to the running greenlet, as a `switch::<_, R>` sees it.
///
/// Inlined into the caller, like the whole path down to the `asm!` block: a function entered
/// before a stack switch and left after it would execute a `ret` whose return address the CPU's
/// return-stack buffer took from the *other* stack's calls, a mispredict on every switch. What
/// runs entirely before ([`resolve`]) or entirely after ([`settle`]) is a normal call.
#[inline(always)]
pub(crate) fn transfer<R: 'static>(target: &Greenlet, payload: Payload) -> Result<R, SwitchError> {
    match transfer_raw(target, payload) {
        Ok(value) => Ok(value),
        Err(Ok(panic)) => resume_unwind(panic),
        Err(Err(error)) => Err(error),
    }
}

/// [`transfer`], handing a received panic back instead of raising it.
#[inline(always)]
pub(crate) fn transfer_raw<R: 'static>(
    target: &Greenlet,
    mut payload: Payload,
) -> Result<R, Result<Box<dyn Any + Send>, SwitchError>> {
    let me = current_record();
    // The common case, a suspended target, needs no walk.
    let destination = if target.record.state.get() == State::Suspended {
        Destination::There(Rc::as_ptr(&target.record))
    } else {
        resolve(target, &mut payload)
    };
    match destination {
        Destination::Here => settle::<R>(
            me,
            Received {
                payload,
                origin: me,
                target: me,
                dying: None,
            },
        ),
        Destination::There(receiver) => {
            let message = Message::new(payload, me, receiver, None);
            let word = &message as *const Message as usize | MESSAGE_TAG;
            // SAFETY: `me` is the running greenlet (alive); `receiver` is suspended or unstarted
            // and kept alive by the target's parent chain, which the caller's handle holds. The
            // message stays in this frame until the receiver has taken it.
            unsafe { switch_and_settle::<R>(me, receiver, word) }
        }
    }
}

/// Low bit of a switched word: set, the word is the address of a [`Message`]; clear, it is the
/// address of a value of exactly the type the receiver awaits (see [`transfer_value`]).
const MESSAGE_TAG: usize = 1;

/// Switches from `me` to `receiver` with `word`, then settles what comes back.
///
/// # Safety
///
/// `me` must be the running greenlet and `receiver` a suspended or unstarted one, kept alive
/// until `me` is resumed; `word` must be valid for `receiver` (see [`MESSAGE_TAG`]).
#[inline(always)]
unsafe fn switch_and_settle<R: 'static>(
    me: *const Record,
    receiver: *const Record,
    word: usize,
) -> Result<R, Result<Box<dyn Any + Send>, SwitchError>> {
    // SAFETY: the caller's contract.
    unsafe {
        (*me).state.set(State::Suspended);
        (*me).awaiting.set(TypeId::of::<R>());
        let received = arch::switch(word, (*me).context.get().as_ref(), (*receiver).context.get().as_ref());
        let origin = CURRENT.with(|current| current.replace(me));
        (*me).state.set(State::Running);
        if received & MESSAGE_TAG != 0 {
            settle::<R>(me, Message::receive(received & !MESSAGE_TAG))
        } else {
            // The sender checked that its value is an `R`; a zero-sized one has no address.
            let value = if std::mem::size_of::<R>() == 0 {
                std::ptr::read(NonNull::<R>::dangling().as_ptr())
            } else {
                std::ptr::read(received as *const R)
            };
            match after_receive(TraceEvent::Switch, origin, me, None) {
                Ok(()) => Ok(value),
                Err(panic) => {
                    drop(value);
                    resume_unwind(panic)
                }
            }
        }
    }
}

/// [`transfer`] of a value of type `T`: when the target is suspended in a switch that asks for
/// exactly a `T`, the word handed over is the value's address and nothing else is written.
#[inline(always)]
pub(crate) fn transfer_value<T: 'static, R: 'static>(target: &Greenlet, value: T) -> Result<R, SwitchError> {
    let mut value = ManuallyDrop::new(value);
    let address = if std::mem::size_of::<T>() == 0 {
        0
    } else {
        &mut *value as *mut T as usize
    };
    let record = &*target.record;
    let outcome = if record.state.get() == State::Suspended
        && record.awaiting.get() == TypeId::of::<T>()
        && address & MESSAGE_TAG == 0
    {
        // SAFETY: we run (`current_record`); the target is suspended, kept alive by the
        // caller's handle; it awaits a `T` and reads it from `address` before anything else runs
        // on our stack; `value` is never dropped here.
        unsafe { switch_and_settle::<R>(current_record(), Rc::as_ptr(&target.record), address) }
    } else {
        let value = ValueRef::new(&mut value);
        transfer_raw::<R>(target, Payload::Value(&value))
    };
    match outcome {
        Ok(value) => Ok(value),
        Err(Ok(panic)) => resume_unwind(panic),
        Err(Err(error)) => Err(error),
    }
}

/// The receiving half of every switch, once `CURRENT` names the receiver `me`: takes the value,
/// calls the trace hook, drops a finished sender's self-reference and kills an abandoned one.
#[inline(always)]
fn settle<R: 'static>(
    me: *const Record,
    received: Received,
) -> Result<R, Result<Box<dyn Any + Send>, SwitchError>> {
    let Received {
        payload,
        origin,
        dying,
        ..
    } = received;
    let event = payload.event();
    // SAFETY: a value in the payload is still in place: nothing ran since the sender's switch.
    let received = unsafe { payload.receive::<R>() };
    if let Err(panic) = after_receive(event, origin, me, dying) {
        drop(received);
        resume_unwind(panic);
    }
    received
}

/// The bookkeeping after a value was taken: the trace hook, then the sender's fate. Returns a
/// panic of the trace hook, for the receiver to raise.
#[inline(always)]
fn after_receive(
    event: TraceEvent,
    origin: *const Record,
    me: *const Record,
    dying: Option<Greenlet>,
) -> Result<(), Box<dyn Any + Send>> {
    let traced = trace::call(event, origin, me);
    match dying {
        Some(dying) => release_finished(dying),
        None if origin != me => {
            // SAFETY: a sender that is not finished is alive: suspended, or running (it is us).
            unsafe { kill_if_abandoned(origin) }
        }
        None => {}
    }
    traced
}

/// Drops a finished greenlet's self-reference, once it has switched away for the last time.
#[cold]
fn release_finished(dying: Greenlet) {
    // Its stack can go back to the pool now, whoever still holds a handle to it.
    drop(dying.record.stack.take());
    drop(dying);
}

/// Kills a suspended greenlet whose only reference is its own (see the module docs).
///
/// # Safety
///
/// `record` must be alive.
#[inline(always)]
unsafe fn kill_if_abandoned(record: *const Record) {
    // SAFETY: the caller guarantees the record is alive; the handle made here is never dropped,
    // so the count is only read.
    let only_self = unsafe {
        (*record).state.get() == State::Suspended
            && !(*record).is_main
            && Rc::strong_count(&ManuallyDrop::new(Rc::from_raw(record))) == 1
    };
    if only_self {
        // SAFETY: as above.
        unsafe { kill_abandoned_sender(record) }
    }
}

/// Kills a sender found abandoned (rule 43): it dropped its last handle to itself, then switched.
///
/// # Safety
///
/// `record` must be alive.
#[cold]
unsafe fn kill_abandoned_sender(record: *const Record) {
    // SAFETY: the caller guarantees the record is alive. The handle made here is the last one
    // besides the greenlet's own, so dropping it kills the greenlet.
    drop(unsafe { handle_from_raw(record) });
}

/// Kill on drop: throws `GreenletExit` into `victim`, whose last handle is being dropped, with
/// the dropping greenlet as its parent for the duration (rules 32-39).
pub(crate) fn kill_abandoned(victim: &Greenlet) {
    let killer = super::getcurrent();
    let original_parent = victim.record.parent.replace(Some(killer));
    let outcome =
        transfer_raw::<GreenletExit>(victim, Payload::Panic(Box::new(GreenletExit::vanished())));
    let dead = victim.record.state.get() == State::Dead;
    *victim.record.parent.borrow_mut() = original_parent;
    match outcome {
        Ok(_) | Err(Err(_)) => {}
        Err(Ok(panic)) => {
            // Rule 36: a kill that turned into another panic is reported, never raised from drop.
            // The panic hook has already printed it where it happened.
            drop(panic);
            if dead {
                eprintln!(
                    "awaitlet: {victim:?} panicked while being killed on drop; the panic was discarded"
                );
            }
        }
    }
    if !dead && Rc::strong_count(&victim.record) == 2 {
        // Rule 37: it caught GreenletExit and switched away without keeping a handle to itself.
        // Its frames are live on its stack, so it can be neither resumed nor freed: leak it.
        eprintln!("awaitlet: GreenletExit did not kill {victim:?}; leaking it");
        std::mem::forget(victim.clone());
    }
}

/// Every greenlet stack starts here, on the first switch into it.
unsafe extern "C" fn entry<A: 'static, B: 'static, F: FnOnce(A) -> B + 'static>(
    arg: usize,
    _: *mut (),
) -> ! {
    // SAFETY: the first switch in passes a `Message` whose target is this greenlet's record,
    // kept alive by the sender's handle until we take our own reference just below.
    let message = unsafe { Message::receive(arg & !MESSAGE_TAG) };
    let me_pointer = message.target;
    // SAFETY: as above.
    let me = unsafe { handle_from_raw(me_pointer) };
    CURRENT.with(|current| current.set(me_pointer));
    me.record.state.set(State::Running);
    let start = me
        .record
        .start
        .take()
        .expect("a starting greenlet has its closure");
    let outcome = match settle::<A>(me_pointer, message) {
        Ok(argument) => {
            // SAFETY: the closure was written by `new_record` and is moved out exactly once.
            let run = unsafe { std::ptr::read(start.closure as *mut F) };
            catch_unwind(AssertUnwindSafe(move || run(argument)))
        }
        Err(failure) => {
            // SAFETY: the closure was never moved out; it is dropped once, here.
            unsafe { (start.drop_closure)(start.closure) };
            match failure {
                // Rule 66: a trace hook that panicked on our start: we die of that panic.
                Ok(panic) => Err(panic),
                Err(_) => {
                    unreachable!("a greenlet is only started with a value of its argument type")
                }
            }
        }
    };
    me.record.state.set(State::Dead);
    let mut returned = std::mem::MaybeUninit::<B>::uninit();
    let value_ref;
    let mut payload = match outcome {
        Ok(value) => {
            // SAFETY: `returned` is never dropped nor touched again by this frame; the receiver
            // moves the value out before this stack is released.
            value_ref = unsafe { ValueRef::from_pointer(returned.write(value)) };
            Payload::Value(&value_ref)
        }
        // Rule 18: an uncaught GreenletExit reaches the parent as a value.
        Err(panic) if panic.is::<GreenletExit>() => Payload::Boxed(panic),
        Err(panic) => Payload::Panic(panic),
    };
    let parent = me
        .record
        .parent
        .borrow()
        .clone()
        .expect("a greenlet has a parent");
    let receiver = match resolve(&parent, &mut payload) {
        Destination::There(receiver) => receiver,
        Destination::Here => unreachable!("a finished greenlet is not running"),
    };
    drop(parent);
    let message = Message::new(payload, me_pointer, receiver, Some(me));
    // SAFETY: `receiver` is kept alive by our parent chain, which our record (kept alive by the
    // `dying` reference in the message) holds; every value left in this frame is moved out by
    // the receiver or owns nothing.
    unsafe {
        let word = &message as *const Message as usize | MESSAGE_TAG;
        arch::switch_final(word, (*receiver).context.get().as_ref());
    }
}
