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
    /// Starts `count` threads named `name`.
    pub fn new(count: usize, name: &str) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for _ in 0..count {
            let rx = std::sync::Arc::clone(&rx);
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
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
