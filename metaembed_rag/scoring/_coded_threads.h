/*
 * What the coded-row kernels (_residual.c, _tiered.c) share around their loops: the candidate
 * ids' range check, the thread count, and the fan-out of a call's work over plain pthreads
 * (the caller's thread takes share 0; a share whose thread cannot start is done by the
 * caller). Included once by each extension.
 */
#ifndef METAEMBED_CODED_THREADS_H
#define METAEMBED_CODED_THREADS_H

#include <Python.h>

#include <pthread.h>
#include <stdint.h>

/* Most threads one call uses. */
#define CODED_MAX_THREADS 64

/* 0 when every id is in [0, nrows); else -1 with IndexError set (GIL held). */
static int coded_ids_in_range(const int64_t *ids, int64_t items, long long nrows)
{
    for (int64_t p = 0; p < items; p++) {
        if (ids[p] < 0 || ids[p] >= nrows) {
            PyErr_Format(PyExc_IndexError, "candidate row %lld out of range [0, %lld)",
                         (long long)ids[p], nrows);
            return -1;
        }
    }
    return 0;
}

/* `threads` clamped to 1..CODED_MAX_THREADS and to the number of items. */
static int coded_threads(int threads, int64_t items)
{
    if (threads < 1) threads = 1;
    if (threads > CODED_MAX_THREADS) threads = CODED_MAX_THREADS;
    if (items < threads) threads = items > 0 ? (int)items : 1;
    return threads;
}

/* fn(share t) for t < n, shares `size` bytes apart from `shares`, the GIL released. */
static void coded_run(void *(*fn)(void *), void *shares, size_t size, int n)
{
    pthread_t tids[CODED_MAX_THREADS];
    int started[CODED_MAX_THREADS] = {0};
    char *base = (char *)shares;
    Py_BEGIN_ALLOW_THREADS
    for (int t = 1; t < n; t++)
        started[t] = pthread_create(&tids[t], NULL, fn, base + (size_t)t * size) == 0;
    for (int t = 1; t < n; t++)
        if (!started[t]) fn(base + (size_t)t * size); /* could not start a thread: do it here */
    fn(base);
    for (int t = 1; t < n; t++)
        if (started[t]) pthread_join(tids[t], NULL);
    Py_END_ALLOW_THREADS
}

#endif
