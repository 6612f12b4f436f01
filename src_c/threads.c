/* threads.c: see threads.h. */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* sched_getcpu, sched_setaffinity and the CPU_* macros */
#endif
#include "threads.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__linux__) || defined(__APPLE__) || defined(__unix__)
#include <sched.h>
#define FASTNN_HAVE_SCHED_YIELD 1
#endif

int fastnn_current_cpu(void)
{
#ifdef __linux__
    return sched_getcpu();
#else
    return -1;
#endif
}

int fastnn_leave_cpu(int cpu)
{
#ifdef __linux__
    if (cpu < 0 || cpu >= CPU_SETSIZE || sched_getcpu() != cpu) return sched_getcpu();
    cpu_set_t allowed, elsewhere;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return cpu;
    elsewhere = allowed;
    CPU_CLR(cpu, &elsewhere);
    if (CPU_COUNT(&elsewhere) == 0) return cpu;
    /* the kernel migrates a thread at once when its current core leaves its mask */
    if (sched_setaffinity(0, sizeof elsewhere, &elsewhere) != 0) return cpu;
    int now = sched_getcpu();
    sched_setaffinity(0, sizeof allowed, &allowed);
    return now;
#else
    (void)cpu;
    return -1;
#endif
}

void fastnn_wake_team(int nthreads)
{
#if defined(_OPENMP) && defined(FASTNN_HAVE_SCHED_YIELD)
    if (nthreads < 2) return;
    int caller_cpu = fastnn_current_cpu(), arrived = 0;
    #pragma omp parallel num_threads(nthreads)
    {
        if (omp_get_thread_num() == 0) {
            /* yielding lets a worker queued on this core run now, not at the next tick */
            int workers = omp_get_num_threads() - 1;
            while (__atomic_load_n(&arrived, __ATOMIC_ACQUIRE) < workers) sched_yield();
        } else {
            fastnn_leave_cpu(caller_cpu);
            __atomic_fetch_add(&arrived, 1, __ATOMIC_RELEASE);
        }
    }
#else
    (void)nthreads;
#endif
}
