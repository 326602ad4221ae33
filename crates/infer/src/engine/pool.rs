//! Worker threads that split a matrix-vector product by rows.
//!
//! The threads live as long as the [`Pool`] (one per engine), so a product costs two channel
//! messages per worker, not a thread spawn. Each product hands every worker a contiguous block
//! of rows; the calling thread computes the first block itself and then collects the others.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::kernels::{Input, Mat, Matvec};

/// The input of a product shared with the workers.
#[derive(Debug)]
pub enum SharedInput {
    F32(Vec<f32>),
    I8(Vec<i8>, f32),
}

impl SharedInput {
    pub fn as_input(&self) -> Input<'_> {
        match self {
            SharedInput::F32(x) => Input::F32(x),
            SharedInput::I8(x, s) => Input::I8(x, *s),
        }
    }
}

struct Job {
    mat: Arc<Mat>,
    x: Arc<SharedInput>,
    first: usize,
    rows: usize,
}

struct Done {
    first: usize,
    /// `None`: the product panicked on the worker (a broken internal invariant); the caller
    /// panics in turn instead of waiting for rows that will never come.
    out: Option<Vec<f32>>,
}

#[derive(Debug)]
pub struct Pool {
    jobs: Vec<Sender<Job>>,
    done: Receiver<Done>,
    handles: Vec<JoinHandle<()>>,
    arch: pulp::Arch,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rows {}..{}", self.first, self.first + self.rows)
    }
}

impl Pool {
    /// A pool of `helpers` threads besides the caller's.
    pub fn new(helpers: usize, arch: pulp::Arch) -> std::io::Result<Pool> {
        let (done_tx, done) = channel::<Done>();
        let mut jobs = Vec::with_capacity(helpers);
        let mut handles = Vec::with_capacity(helpers);
        for i in 0..helpers {
            let (tx, rx) = channel::<Job>();
            let done_tx = done_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("pazar-infer-{i}"))
                .spawn(move || {
                    // Ends when the pool drops its senders.
                    while let Ok(job) = rx.recv() {
                        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            let mut out = vec![0.0f32; job.rows];
                            arch.dispatch(Matvec {
                                mat: &job.mat,
                                first: job.first,
                                x: job.x.as_input(),
                                out: &mut out,
                            });
                            out
                        }))
                        .ok();
                        let failed = out.is_none();
                        if done_tx.send(Done { first: job.first, out }).is_err() || failed {
                            return;
                        }
                    }
                })?;
            jobs.push(tx);
            handles.push(handle);
        }
        Ok(Pool {
            jobs,
            done,
            handles,
            arch,
        })
    }

    /// `out = mat · x` with the rows split between the caller and every helper in blocks that
    /// are multiples of 8 rows (the kernel's block).
    pub fn matvec(&self, mat: &Arc<Mat>, x: SharedInput, out: &mut [f32]) {
        assert_eq!(out.len(), mat.rows, "one output per row");
        let parts = self.jobs.len() + 1;
        let per = mat.rows.div_ceil(parts).div_ceil(8) * 8;
        let x = Arc::new(x);
        let mut sent = 0;
        for (i, tx) in self.jobs.iter().enumerate() {
            let first = (i + 1) * per;
            if first >= mat.rows {
                break;
            }
            let rows = per.min(mat.rows - first);
            let job = Job {
                mat: Arc::clone(mat),
                x: Arc::clone(&x),
                first,
                rows,
            };
            tx.send(job).expect("pool workers live as long as the pool");
            sent += 1;
        }
        let mine = per.min(mat.rows);
        self.arch.dispatch(Matvec {
            mat,
            first: 0,
            x: x.as_input(),
            out: &mut out[..mine],
        });
        for _ in 0..sent {
            let d = self.done.recv().expect("pool workers live as long as the pool");
            let rows = d.out.expect("a pool worker panicked computing its rows");
            out[d.first..d.first + rows.len()].copy_from_slice(&rows);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs.clear();
        for h in self.handles.drain(..) {
            // A worker that panicked has nothing left to clean up.
            let _ = h.join();
        }
    }
}
