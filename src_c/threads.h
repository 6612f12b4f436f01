/* threads.h: starting fastnn's OpenMP worker threads well on machines whose idle cores
 * halt.
 *
 * On a virtual machine (measured on this project's 2-core Firecracker VMs), the kernel
 * treats a halted idle vCPU as unavailable and puts a worker thread that wakes there on
 * the core of the thread that woke it. That thread then spins at the region's first
 * barrier, and the two share one core until a scheduler tick preempts the spinner:
 * milliseconds per barrier until a load balance moves one of them. A two-thread region
 * entered after 0.15 s idle took 5.8 ms instead of 20 us, and a whole 200-epoch
 * scikit-learn fit of breast_cancer (20 ms) lost 10 ms to it.
 */
#ifndef FASTNN_THREADS_H
#define FASTNN_THREADS_H

/* Wakes the OpenMP threads of a team of `nthreads` before compiled work that will use
 * them: each worker checks in while the caller yields its core instead of spinning, and a
 * worker that finds itself on the caller's core moves to another core it may run on (its
 * affinity is narrowed for a moment, then restored as it was). The workers then spin
 * on their own cores, ready for the regions that follow. A no-op on one thread, without
 * OpenMP, and (apart from the check-in) outside Linux. */
void fastnn_wake_team(int nthreads);

/* The core the calling thread runs on, or -1 where the system does not say. */
int fastnn_current_cpu(void);

/* Moves the calling thread off core `cpu` if it runs there and may run elsewhere, then
 * restores its affinity as it was (a thread pinned to that one core stays). Returns the
 * core it runs on afterwards (-1 where the system does not say). */
int fastnn_leave_cpu(int cpu);

#endif
