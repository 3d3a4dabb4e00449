//! A few plain threads for background work that blocks (read-ahead loads, GPU loads).
//! Blocking jobs must not run on rayon's pool: a worker waiting on a slot lock inside a rayon
//! join could be handed a job that needs a lock further down its own stack.

use std::sync::mpsc;
use std::sync::Mutex;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads draining one job queue; they exit when this is dropped.
pub struct Workers {
    queue: Mutex<mpsc::Sender<Job>>,
}

impl Workers {
    /// Starts `count` threads named `name`, `nice` steps less favoured than the caller (0:
    /// the same; more: they give way to the process's other threads when those wake up).
    pub fn new(count: usize, name: &str, nice: i32) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for _ in 0..count {
            let rx = std::sync::Arc::clone(&rx);
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    if nice != 0 {
                        lower_priority(nice);
                    }
                    loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .expect("spawn worker thread");
        }
        Workers {
            queue: Mutex::new(tx),
        }
    }

    /// Queues `job`; it runs on one of the threads.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        // The receivers live as long as the sender, so sending cannot fail.
        let _ = queue.send(Box::new(job));
    }
}

/// Raises the calling thread's nice value by `steps` (on Linux, PRIO_PROCESS with a thread
/// id applies to that thread alone). Lowering one's own priority needs no privilege; a
/// failure only costs speed, so it is logged and ignored.
fn lower_priority(steps: i32) {
    // SAFETY: plain system calls on the calling thread's own id.
    let result = unsafe {
        let tid = libc::gettid() as libc::id_t;
        let current = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, current + steps)
    };
    if result != 0 {
        let error = std::io::Error::last_os_error();
        tracing::debug!(%error, steps, "could not lower a worker thread's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_nice() -> i32 {
        // SAFETY: a plain system call on the calling thread's own id.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn jobs_run_at_the_nice_value_asked_for() {
        let base = own_nice();
        for (nice, expected) in [(0, base), (5, (base + 5).min(19))] {
            let workers = Workers::new(1, "smpfs-test", nice);
            let (tx, rx) = mpsc::channel();
            workers.spawn(move || tx.send(own_nice()).unwrap());
            assert_eq!(rx.recv().unwrap(), expected, "nice {nice}");
        }
    }
}
