/* The spool's append transactions (BEGIN IMMEDIATE, the rows of each append, the state row,
 * COMMIT) run by a native thread on the sqlite3 connection the spool already holds, without
 * the GIL.
 *
 * Python's sqlite3 module binds every parameter under the GIL and releases the GIL only
 * around each step, and a Python thread needs the GIL again to pick up each piece of work: a
 * committer thread in Python waits for the writer thread (which holds the GIL while it
 * encodes) at every hand-over. Here the writer reads each append's values into cells under
 * the GIL (pointers into the row objects, which stay referenced, and unchanged, until the
 * work is handed back) and queues them; the native thread inserts them into the group's open
 * transaction while the writer encodes the next append, then commits when the writer closes
 * the group. It never touches a Python object; a Python thread collects the outcomes (wait).
 *
 * Python exposes no handle of a connection to C. The handle is the first field after the
 * object header of sqlite3.Connection in every CPython from 3.10 to 3.13 (the versions this
 * file accepts); `attach` also requires the exact type, and the Python side checks, through
 * this handle, the file name and the change counter against what the connection itself says
 * before it uses this path. The SQLite functions are looked up in the library that Python's
 * _sqlite3 module itself uses (dlopen of that module, no new load), so both work on the same
 * SQLite. Wherever any of this is not available the spool inserts through the sqlite3 module,
 * as it did before; edge_runtime.spool._db.GroupCommit decides.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;

#define SQLITE_OK 0
#define SQLITE_ROW 100
#define SQLITE_DONE 101
#define SQLITE_STATIC ((void (*)(void *))0)
#define SQLITE_CHECKPOINT_PASSIVE 0

static struct {
    int (*exec)(sqlite3 *, const char *, void *, void *, char **);
    int (*prepare_v2)(sqlite3 *, const char *, int, sqlite3_stmt **, const char **);
    int (*finalize)(sqlite3_stmt *);
    int (*step)(sqlite3_stmt *);
    int (*reset)(sqlite3_stmt *);
    int (*bind_int64)(sqlite3_stmt *, int, int64_t);
    int (*bind_double)(sqlite3_stmt *, int, double);
    int (*bind_text)(sqlite3_stmt *, int, const char *, int, void (*)(void *));
    int (*bind_blob)(sqlite3_stmt *, int, const void *, int, void (*)(void *));
    int (*bind_null)(sqlite3_stmt *, int);
    int (*bind_parameter_count)(sqlite3_stmt *);
    const char *(*errmsg)(sqlite3 *);
    int (*extended_errcode)(sqlite3 *);
    const char *(*db_filename)(sqlite3 *, const char *);
    int (*get_autocommit)(sqlite3 *);
    int (*total_changes)(sqlite3 *);
    int64_t (*column_int64)(sqlite3_stmt *, int);
    void *(*wal_hook)(sqlite3 *, int (*)(void *, sqlite3 *, const char *, int), void *);
    int (*wal_checkpoint_v2)(sqlite3 *, const char *, int, int *, int *);
    int (*wal_autocheckpoint)(sqlite3 *, int);
    void *(*db_mutex)(sqlite3 *);
} api;

static const char *api_names[] = {
    "sqlite3_exec", "sqlite3_prepare_v2", "sqlite3_finalize", "sqlite3_step", "sqlite3_reset",
    "sqlite3_bind_int64", "sqlite3_bind_double", "sqlite3_bind_text", "sqlite3_bind_blob",
    "sqlite3_bind_null", "sqlite3_bind_parameter_count", "sqlite3_errmsg",
    "sqlite3_extended_errcode", "sqlite3_db_filename", "sqlite3_get_autocommit",
    "sqlite3_total_changes", "sqlite3_column_int64", "sqlite3_wal_hook",
    "sqlite3_wal_checkpoint_v2", "sqlite3_wal_autocheckpoint", "sqlite3_db_mutex",
};

static PyTypeObject *connection_type; /* owned once attached */

enum { C_NULL, C_INT, C_REAL, C_TEXT, C_BLOB };

typedef struct {
    int kind;
    int len;
    union {
        int64_t i;
        double d;
        const char *p;
    } v;
} Cell;

static PyObject *attach(PyObject *self, PyObject *args) {
    const char *module_file;
    PyObject *type;
    if (!PyArg_ParseTuple(args, "sO!", &module_file, &PyType_Type, &type)) return NULL;
#if PY_VERSION_HEX < 0x030A0000 || PY_VERSION_HEX >= 0x030E0000
    PyErr_SetString(PyExc_ImportError, "the sqlite3.Connection layout is not known for this Python");
    return NULL;
#else
    void *lib = dlopen(module_file, RTLD_NOW | RTLD_NOLOAD);
    if (lib == NULL) {
        PyErr_Format(PyExc_ImportError, "%s is not loaded: %s", module_file, dlerror());
        return NULL;
    }
    void **slots = (void **)&api;
    size_t n = sizeof api_names / sizeof api_names[0];
    if (n * sizeof(void *) != sizeof api) {
        PyErr_SetString(PyExc_ImportError, "internal: api table and names differ");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        void *fn = dlsym(lib, api_names[i]);
        if (fn == NULL) {
            memset(&api, 0, sizeof api);
            PyErr_Format(PyExc_ImportError, "%s is not visible from %s", api_names[i], module_file);
            return NULL;
        }
        slots[i] = fn;
    }
    /* the library stays loaded: Python's _sqlite3 module is never unloaded */
    Py_INCREF(type);
    Py_XSETREF(connection_type, (PyTypeObject *)type);
    Py_RETURN_NONE;
#endif
}

/* The connection's handle, or NULL with an exception set. */
static sqlite3 *handle_of(PyObject *conn) {
    if (connection_type == NULL || api.exec == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "attach() has not succeeded");
        return NULL;
    }
    if (Py_TYPE(conn) != connection_type) {
        PyErr_SetString(PyExc_TypeError, "expected a sqlite3.Connection (exactly)");
        return NULL;
    }
    sqlite3 *db = *(sqlite3 **)((char *)conn + sizeof(PyObject));
    if (db == NULL) PyErr_SetString(PyExc_ValueError, "the connection is closed");
    return db;
}

static PyObject *describe(PyObject *self, PyObject *conn) {
    sqlite3 *db = handle_of(conn);
    if (db == NULL) return NULL;
    const char *name = api.db_filename(db, "main");
    return Py_BuildValue("(sii)", name ? name : "", api.get_autocommit(db), api.total_changes(db));
}

static int to_cell(PyObject *o, Cell *c) {
    if (o == Py_None) {
        c->kind = C_NULL;
    } else if (PyLong_Check(o)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow) {
            PyErr_SetString(PyExc_OverflowError, "an integer does not fit in 64 bits");
            return -1;
        }
        if (v == -1 && PyErr_Occurred()) return -1;
        c->kind = C_INT;
        c->v.i = v;
    } else if (PyFloat_CheckExact(o)) {
        c->kind = C_REAL;
        c->v.d = PyFloat_AS_DOUBLE(o);
    } else if (PyUnicode_CheckExact(o)) {
        Py_ssize_t n;
        const char *p = PyUnicode_AsUTF8AndSize(o, &n); /* cached in the str object */
        if (p == NULL) return -1;
        if (n > INT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "a string is too long");
            return -1;
        }
        c->kind = C_TEXT;
        c->v.p = p;
        c->len = (int)n;
    } else if (PyBytes_CheckExact(o)) {
        Py_ssize_t n = PyBytes_GET_SIZE(o);
        if (n > INT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "a payload is too long");
            return -1;
        }
        c->kind = C_BLOB;
        c->v.p = PyBytes_AS_STRING(o);
        c->len = (int)n;
    } else if (PyByteArray_CheckExact(o)) { /* not resized meanwhile: the writer's own rows */
        Py_ssize_t n = PyByteArray_GET_SIZE(o);
        if (n > INT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "a payload is too long");
            return -1;
        }
        c->kind = C_BLOB;
        c->v.p = PyByteArray_AS_STRING(o);
        c->len = (int)n;
    } else {
        PyErr_Format(PyExc_TypeError,
                     "cannot bind a %.100s (int, float, str, bytes, bytearray or None)",
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    return 0;
}

static int bind_all(sqlite3_stmt *st, const Cell *cells, int width) {
    for (int k = 0; k < width; k++) {
        const Cell *c = &cells[k];
        int rc;
        switch (c->kind) {
        case C_INT: rc = api.bind_int64(st, k + 1, c->v.i); break;
        case C_REAL: rc = api.bind_double(st, k + 1, c->v.d); break;
        case C_TEXT: rc = api.bind_text(st, k + 1, c->v.p, c->len, SQLITE_STATIC); break;
        case C_BLOB: rc = api.bind_blob(st, k + 1, c->v.p, c->len, SQLITE_STATIC); break;
        default: rc = api.bind_null(st, k + 1); break;
        }
        if (rc != SQLITE_OK) return rc;
    }
    return SQLITE_OK;
}

#define MAX_SQLS 8

static double monotonic_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the committer: a native thread that runs the spool's transactions ------------------
 *
 * The writer thread (holding the GIL) hands it work in order: the rows of each encoded
 * append ("rows": inserted into the open transaction, which the first one begins), then the
 * group's state row ("commit": the state row, COMMIT, and the pages in use after it). The
 * thread never touches a Python object: the values are read into cells by the writer, and
 * the objects they point into stay referenced until `wait` hands the finished work back and
 * releases them, under the GIL. After a failure the thread rolls back and skips everything
 * up to the writer's "reset". */

enum { J_ROWS, J_COMMIT, J_RESET };

typedef struct Job {
    struct Job *next;
    int kind;
    Cell *cells;      /* ROWS: rows x width; COMMIT: the state row's values */
    Py_ssize_t rows;  /* ROWS: number of rows */
    PyObject *obj;    /* owned. ROWS: the list the cells point into; COMMIT: the caller's token */
    int failed, code; /* COMMIT: the transaction's outcome */
    char message[256];
    long long used_bytes;
    double busy_s;
} Job;

typedef struct {
    PyObject_HEAD
    PyObject *conn; /* owned: kept open until close() */
    sqlite3 *db;
    int nsqls, per[MAX_SQLS];
    sqlite3_stmt *rows_st[MAX_SQLS], *state_st, *pragma_st[3];
    int state_width;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    Job *todo, *todo_tail, *done, *done_tail;
    int pending_rows; /* ROWS jobs queued or running */
    int commits_done; /* COMMIT jobs in `done` */
    int stopping, closed, exited;
    /* WAL checkpoints (see wal_hook_cb) */
    int serialized;           /* the connection has its own mutex: another thread may use it */
    int hooked;               /* wal_hook_cb is installed */
    int wal_frames;           /* frames in the WAL after the last commit (atomic) */
    long long deferred_checkpoints, inline_checkpoints; /* under mu */
    /* the thread's own */
    int in_txn, skipping, first_code;
    char first_message[256];
    double txn_busy_s;
} Committer;

#define ROW_WIDTH 8
#define MERGE_ROWS 20000 /* most rows taken from the queue at once */

static void job_free(Job *j) { /* with the GIL */
    Py_XDECREF(j->obj);
    PyMem_RawFree(j->cells);
    PyMem_RawFree(j);
}

static int run_rows(Committer *c, const Cell *cells, Py_ssize_t rows) {
    int rc = SQLITE_OK;
    Py_ssize_t r = 0;
    for (int s = 0; s < c->nsqls && rc == SQLITE_OK; s++) {
        sqlite3_stmt *st = c->rows_st[s];
        int per = c->per[s];
        while (rows - r >= per && rc == SQLITE_OK) {
            rc = bind_all(st, cells + r * ROW_WIDTH, per * ROW_WIDTH);
            if (rc == SQLITE_OK) rc = api.step(st);
            if (rc == SQLITE_DONE || rc == SQLITE_ROW) rc = SQLITE_OK;
            api.reset(st); /* the step's error stays on the connection */
            r += per;
        }
    }
    return rc;
}

static int step_once(sqlite3_stmt *st, long long *out) {
    int rc = api.step(st);
    if (rc == SQLITE_ROW && out != NULL) *out = api.column_int64(st, 0);
    api.reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* WAL checkpoints. SQLite's default checkpoints inside the COMMIT that takes the WAL past
 * 1000 pages, so every few groups one commit also copies the WAL into the database file and
 * its callers wait for that too. While the committer is in use the connection's WAL hook is
 * this one instead. After the committer's own COMMIT it only notes the WAL's size, and the
 * committer checkpoints once it has reported the commit (the group's callers do not wait for
 * it; the next group's rows do, as they would have waited for that commit). After any other
 * commit on the connection (acks, maintenance: another thread) it checkpoints at once, as
 * SQLite's default would. The same work at the same WAL size, the same durability (the
 * commit's fsync of the WAL). On a connection without a mutex of its own (not serialized) the
 * committer must not touch it after reporting, so it checkpoints inside its COMMIT too. */
#define CKPT_PAGES 1000

static int wal_hook_cb(void *arg, sqlite3 *db, const char *name, int frames) {
    Committer *c = arg;
    int committer = c->thread_started && pthread_equal(pthread_self(), c->thread);
    if (frames >= CKPT_PAGES && (!committer || !c->serialized)) {
        api.wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        frames = 0;
        pthread_mutex_lock(&c->mu);
        c->inline_checkpoints++;
        pthread_mutex_unlock(&c->mu);
    }
    __atomic_store_n(&c->wal_frames, frames, __ATOMIC_RELAXED);
    return SQLITE_OK;
}

/* In the committer thread: run one job (no GIL, no Python objects). */
static void run_job(Committer *c, Job *j) {
    double started = monotonic_s();
    int rc = SQLITE_OK;
    if (j->kind == J_RESET) {
        c->skipping = 0;
        return;
    }
    if (!c->skipping) {
        if (!c->in_txn) {
            rc = api.exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
            if (rc == SQLITE_OK) {
                c->in_txn = 1;
                c->txn_busy_s = 0.0;
            }
        }
        if (rc == SQLITE_OK && j->kind == J_ROWS) rc = run_rows(c, j->cells, j->rows);
        if (rc == SQLITE_OK && j->kind == J_COMMIT) {
            rc = bind_all(c->state_st, j->cells, c->state_width);
            if (rc == SQLITE_OK) rc = step_once(c->state_st, NULL);
            if (rc == SQLITE_OK) rc = api.exec(c->db, "COMMIT", NULL, NULL, NULL);
            if (rc == SQLITE_OK) {
                c->in_txn = 0;
                long long size = 0, count = 0, free_pages = 0;
                if (step_once(c->pragma_st[0], &size) == SQLITE_OK &&
                    step_once(c->pragma_st[1], &count) == SQLITE_OK &&
                    step_once(c->pragma_st[2], &free_pages) == SQLITE_OK)
                    j->used_bytes = (count - free_pages) * size;
                else
                    j->used_bytes = -1;
            }
        }
        if (rc != SQLITE_OK) {
            c->first_code = api.extended_errcode(c->db);
            snprintf(c->first_message, sizeof c->first_message, "%s", api.errmsg(c->db));
            if (!api.get_autocommit(c->db)) api.exec(c->db, "ROLLBACK", NULL, NULL, NULL);
            c->in_txn = 0;
            c->skipping = 1;
        }
    }
    c->txn_busy_s += monotonic_s() - started;
    if (j->kind == J_COMMIT) {
        if (c->skipping) {
            j->failed = 1;
            j->code = c->first_code;
            snprintf(j->message, sizeof j->message, "%s", c->first_message);
        }
        j->busy_s = c->txn_busy_s;
        c->txn_busy_s = 0.0;
    }
}

static void *committer_main(void *arg) {
    Committer *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (c->todo == NULL && !c->stopping) pthread_cond_wait(&c->work_cv, &c->mu);
        if (c->todo == NULL) break; /* stopping, and nothing left */
        /* Take the first job, and with a ROWS job every ROWS job queued right behind it:
         * their rows go through the statements together, most of them 512 rows at a time
         * (the writer hands over one append at a time, often a few hundred rows). */
        Job *j = c->todo, *last = j;
        int njobs = 1;
        Py_ssize_t rows = j->rows;
        if (j->kind == J_ROWS) {
            while (last->next != NULL && last->next->kind == J_ROWS && rows < MERGE_ROWS) {
                last = last->next;
                rows += last->rows;
                njobs++;
            }
        }
        c->todo = last->next;
        if (c->todo == NULL) c->todo_tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&c->mu);
        if (njobs == 1) {
            run_job(c, j);
        } else {
            Job merged = {.kind = J_ROWS, .rows = rows};
            merged.cells = malloc(sizeof(Cell) * (size_t)rows * ROW_WIDTH);
            if (merged.cells != NULL) {
                Py_ssize_t at = 0;
                for (Job *k = j; k != NULL; k = k->next) {
                    memcpy(merged.cells + at, k->cells, sizeof(Cell) * (size_t)k->rows * ROW_WIDTH);
                    at += k->rows * ROW_WIDTH;
                }
                run_job(c, &merged);
                free(merged.cells);
            } else {
                for (Job *k = j; k != NULL; k = k->next) run_job(c, k);
            }
        }
        pthread_mutex_lock(&c->mu);
        if (c->done_tail) c->done_tail->next = j;
        else c->done = j;
        c->done_tail = last;
        if (j->kind == J_ROWS) c->pending_rows -= njobs;
        if (j->kind == J_COMMIT) {
            c->commits_done++;
            pthread_cond_broadcast(&c->done_cv);
            if (c->serialized && !c->in_txn &&
                __atomic_load_n(&c->wal_frames, __ATOMIC_RELAXED) >= CKPT_PAGES) {
                pthread_mutex_unlock(&c->mu); /* the commit is reported: checkpoint now */
                int rc = api.wal_checkpoint_v2(c->db, "main", SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
                if (rc == SQLITE_OK) __atomic_store_n(&c->wal_frames, 0, __ATOMIC_RELAXED);
                pthread_mutex_lock(&c->mu);
                if (rc == SQLITE_OK) c->deferred_checkpoints++;
            }
        }
    }
    if (c->in_txn) { /* closed mid-group: nothing of it was committed */
        api.exec(c->db, "ROLLBACK", NULL, NULL, NULL);
        c->in_txn = 0;
    }
    c->exited = 1;
    pthread_cond_broadcast(&c->done_cv);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void committer_finalize(Committer *c) {
    for (int s = 0; s < MAX_SQLS; s++) {
        if (c->rows_st[s]) api.finalize(c->rows_st[s]);
        c->rows_st[s] = NULL;
    }
    if (c->state_st) api.finalize(c->state_st);
    c->state_st = NULL;
    for (int s = 0; s < 3; s++) {
        if (c->pragma_st[s]) api.finalize(c->pragma_st[s]);
        c->pragma_st[s] = NULL;
    }
}

/* Stop the thread (after the work queued so far) and release everything; with the GIL. */
static void committer_shutdown(Committer *c) {
    if (c->closed) return;
    c->closed = 1;
    if (!c->thread_started) c->exited = 1;
    if (c->thread_started) {
        pthread_mutex_lock(&c->mu);
        c->stopping = 1;
        pthread_cond_broadcast(&c->work_cv);
        pthread_mutex_unlock(&c->mu);
        Py_BEGIN_ALLOW_THREADS
        pthread_join(c->thread, NULL);
        Py_END_ALLOW_THREADS
        c->thread_started = 0;
    }
    /* The thread ran everything queued; what it finished stays in `done` for wait() (the
     * outcomes of the last commits) or for dealloc. SQLite's own checkpointing again. */
    if (c->hooked) api.wal_autocheckpoint(c->db, CKPT_PAGES);
    c->hooked = 0;
    committer_finalize(c);
}

static void committer_dealloc(Committer *c) {
    committer_shutdown(c);
    for (Job *j = c->done, *next; j != NULL; j = next) { /* nobody waited for these */
        next = j->next;
        job_free(j);
    }
    c->done = c->done_tail = NULL;
    pthread_cond_destroy(&c->work_cv);
    pthread_cond_destroy(&c->done_cv);
    pthread_mutex_destroy(&c->mu);
    Py_XDECREF(c->conn);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static int prepare(Committer *c, const char *sql, sqlite3_stmt **st) {
    if (api.prepare_v2(c->db, sql, -1, st, NULL) != SQLITE_OK) {
        PyErr_Format(PyExc_ValueError, "cannot prepare %.60s: %s", sql, api.errmsg(c->db));
        return -1;
    }
    return 0;
}

/* Committer(conn, insert_sqls, state_sql): `insert_sqls` is the same INSERT of 8 values per
 * row for several rows per statement, most rows first, the last for one row; `state_sql` the
 * statement run with the commit's values just before COMMIT. */
static PyObject *committer_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *conn, *sql_objs;
    const char *state_sql;
    if (!PyArg_ParseTuple(args, "OO!s", &conn, &PyTuple_Type, &sql_objs, &state_sql)) return NULL;
    sqlite3 *db = handle_of(conn);
    if (db == NULL) return NULL;
    int nsqls = (int)PyTuple_GET_SIZE(sql_objs);
    if (nsqls < 1 || nsqls > MAX_SQLS) {
        PyErr_SetString(PyExc_ValueError, "insert_sqls: 1 to 8 statements");
        return NULL;
    }
    Committer *c = (Committer *)type->tp_alloc(type, 0);
    if (c == NULL) return NULL;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->work_cv, NULL);
    pthread_cond_init(&c->done_cv, NULL);
    Py_INCREF(conn);
    c->conn = conn;
    c->db = db;
    for (int s = 0; s < nsqls; s++) {
        const char *sql = PyUnicode_AsUTF8(PyTuple_GET_ITEM(sql_objs, s));
        if (sql == NULL || prepare(c, sql, &c->rows_st[s]) < 0) goto fail;
        c->nsqls = s + 1;
        int params = api.bind_parameter_count(c->rows_st[s]);
        c->per[s] = params / ROW_WIDTH;
        if (params % ROW_WIDTH != 0 || c->per[s] < 1 || (s > 0 && c->per[s] >= c->per[s - 1]) ||
            (s == nsqls - 1 && c->per[s] != 1)) {
            PyErr_SetString(PyExc_ValueError,
                            "insert_sqls must take whole rows of 8, most rows first, the last one row");
            goto fail;
        }
    }
    if (prepare(c, state_sql, &c->state_st) < 0 || prepare(c, "PRAGMA page_size", &c->pragma_st[0]) < 0 ||
        prepare(c, "PRAGMA page_count", &c->pragma_st[1]) < 0 ||
        prepare(c, "PRAGMA freelist_count", &c->pragma_st[2]) < 0)
        goto fail;
    c->state_width = api.bind_parameter_count(c->state_st);
    if (c->state_width < 1) {
        PyErr_SetString(PyExc_ValueError, "state_sql takes no parameters");
        goto fail;
    }
    c->serialized = api.db_mutex(db) != NULL;
    api.wal_hook(db, wal_hook_cb, c);
    c->hooked = 1;
    if (pthread_create(&c->thread, NULL, committer_main, c) != 0) {
        PyErr_SetString(PyExc_OSError, "cannot start the committer thread");
        goto fail;
    }
    c->thread_started = 1;
    return (PyObject *)c;
fail:
    c->closed = 1;
    if (c->hooked) api.wal_autocheckpoint(c->db, CKPT_PAGES);
    c->hooked = 0;
    committer_finalize(c);
    Py_DECREF(c);
    return NULL;
}

static int push(Committer *c, Job *j) {
    pthread_mutex_lock(&c->mu);
    if (c->closed || c->stopping) {
        pthread_mutex_unlock(&c->mu);
        PyErr_SetString(PyExc_ValueError, "the committer is closed");
        return -1;
    }
    j->next = NULL;
    if (c->todo_tail) c->todo_tail->next = j;
    else c->todo = j;
    c->todo_tail = j;
    if (j->kind == J_ROWS) c->pending_rows++;
    pthread_cond_signal(&c->work_cv);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

/* Cells of every item of `seq` (a list), or NULL with an exception set. */
static Cell *cells_of(PyObject *list, Py_ssize_t n) {
    Cell *cells = PyMem_RawMalloc(sizeof(Cell) * (size_t)(n + 1));
    if (cells == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (to_cell(PyList_GET_ITEM(list, i), &cells[i]) < 0) {
            PyMem_RawFree(cells);
            return NULL;
        }
    }
    return cells;
}

/* rows(flat): queue the rows of 8 values in `flat` (a list, not to be changed afterwards)
 * for the open transaction. A value that cannot be bound raises here, and nothing is queued. */
static PyObject *committer_rows(Committer *c, PyObject *flat) {
    if (!PyList_Check(flat) || PyList_GET_SIZE(flat) % ROW_WIDTH != 0) {
        PyErr_SetString(PyExc_ValueError, "flat must be a list of whole rows of 8 values");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(flat);
    Job *j = PyMem_RawCalloc(1, sizeof(Job));
    if (j == NULL) return PyErr_NoMemory();
    if ((j->cells = cells_of(flat, n)) == NULL) {
        PyMem_RawFree(j);
        return NULL;
    }
    j->kind = J_ROWS;
    j->rows = n / ROW_WIDTH;
    Py_INCREF(flat);
    j->obj = flat;
    if (push(c, j) < 0) {
        job_free(j);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* commit(state, token): queue the state row's values (a list) and COMMIT; `wait` reports the
 * outcome with `token`. */
static PyObject *committer_commit(Committer *c, PyObject *args) {
    PyObject *state, *token;
    if (!PyArg_ParseTuple(args, "O!O", &PyList_Type, &state, &token)) return NULL;
    if (PyList_GET_SIZE(state) != c->state_width) {
        PyErr_Format(PyExc_ValueError, "state_sql takes %d values", c->state_width);
        return NULL;
    }
    Job *j = PyMem_RawCalloc(1, sizeof(Job));
    if (j == NULL) return PyErr_NoMemory();
    if ((j->cells = cells_of(state, c->state_width)) == NULL) {
        PyMem_RawFree(j);
        return NULL;
    }
    j->kind = J_COMMIT;
    Py_INCREF(token);
    j->obj = token;
    if (push(c, j) < 0) {
        job_free(j);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *committer_reset(Committer *c, PyObject *unused) {
    Job *j = PyMem_RawCalloc(1, sizeof(Job));
    if (j == NULL) return PyErr_NoMemory();
    j->kind = J_RESET;
    if (push(c, j) < 0) {
        job_free(j);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *committer_pending(Committer *c, PyObject *unused) {
    pthread_mutex_lock(&c->mu);
    int n = c->pending_rows;
    pthread_mutex_unlock(&c->mu);
    return PyLong_FromLong(n);
}

/* wait(timeout=None) -> list of (token, None | (code, message), used_bytes, busy_s), or None
 * once closed. Blocks, without the GIL, until a commit has finished (or `timeout` seconds);
 * releases the rows of finished work. */
static PyObject *committer_wait(Committer *c, PyObject *args) {
    double timeout = -1.0;
    PyObject *timeout_obj = Py_None;
    if (!PyArg_ParseTuple(args, "|O", &timeout_obj)) return NULL;
    if (timeout_obj != Py_None) {
        timeout = PyFloat_AsDouble(timeout_obj);
        if (timeout == -1.0 && PyErr_Occurred()) return NULL;
        if (timeout < 0) timeout = 0;
    }
    Job *got = NULL;
    int ended;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&c->mu);
    if (timeout < 0) {
        while (c->commits_done == 0 && !c->exited) pthread_cond_wait(&c->done_cv, &c->mu);
    } else if (c->commits_done == 0 && !c->exited) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        double whole = (double)(long long)timeout;
        until.tv_sec += (time_t)whole;
        until.tv_nsec += (long)((timeout - whole) * 1e9);
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec += 1;
            until.tv_nsec -= 1000000000L;
        }
        while (c->commits_done == 0 && !c->exited &&
               pthread_cond_timedwait(&c->done_cv, &c->mu, &until) == 0) {
        }
    }
    got = c->done;
    c->done = c->done_tail = NULL;
    c->commits_done = 0;
    ended = c->exited;
    pthread_mutex_unlock(&c->mu);
    Py_END_ALLOW_THREADS
    PyObject *out = PyList_New(0);
    for (Job *j = got, *next; j != NULL; j = next) {
        next = j->next;
        if (out != NULL && j->kind == J_COMMIT) {
            PyObject *failed = j->failed ? Py_BuildValue("(is)", j->code, j->message)
                                         : Py_NewRef(Py_None);
            PyObject *item = failed ? Py_BuildValue("(ONLd)", j->obj, failed, j->used_bytes,
                                                    j->busy_s)
                                    : NULL;
            if (item == NULL || PyList_Append(out, item) < 0) Py_CLEAR(out);
            Py_XDECREF(item);
        }
        job_free(j);
    }
    if (out != NULL && ended && PyList_GET_SIZE(out) == 0) { /* nothing more will come */
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    return out;
}

static PyObject *committer_checkpoints(Committer *c, PyObject *unused) {
    pthread_mutex_lock(&c->mu);
    long long deferred = c->deferred_checkpoints, inlined = c->inline_checkpoints;
    pthread_mutex_unlock(&c->mu);
    return Py_BuildValue("(LL)", deferred, inlined);
}

static PyObject *committer_close(Committer *c, PyObject *unused) {
    committer_shutdown(c);
    Py_RETURN_NONE;
}

static PyMethodDef committer_methods[] = {
    {"rows", (PyCFunction)committer_rows, METH_O,
     "rows(flat): queue rows (8 values each) for the open transaction."},
    {"commit", (PyCFunction)committer_commit, METH_VARARGS,
     "commit(state, token): queue the state row and COMMIT; wait() reports it with token."},
    {"reset", (PyCFunction)committer_reset, METH_NOARGS,
     "Queue the end of skipping (after the writer has handled a failure)."},
    {"pending", (PyCFunction)committer_pending, METH_NOARGS,
     "Number of rows() calls not yet inserted."},
    {"wait", (PyCFunction)committer_wait, METH_VARARGS,
     "wait(timeout=None) -> [(token, None | (code, message), used_bytes, busy_s)] | None."},
    {"checkpoints", (PyCFunction)committer_checkpoints, METH_NOARGS,
     "checkpoints() -> (WAL checkpoints the committer ran after reporting a commit, checkpoints "
     "run inside a commit)."},
    {"close", (PyCFunction)committer_close, METH_NOARGS,
     "Finish the queued work, stop the thread, finalize the statements."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CommitterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edge_runtime.spool._txn.Committer",
    .tp_basicsize = sizeof(Committer),
    .tp_dealloc = (destructor)committer_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Committer(conn, insert_sqls, state_sql): the spool's transactions in a native thread.",
    .tp_methods = committer_methods,
    .tp_new = committer_new,
};

static PyMethodDef methods[] = {
    {"attach", attach, METH_VARARGS,
     "attach(sqlite3_module_file, Connection): find SQLite's functions in the library that "
     "Python's _sqlite3 module uses."},
    {"describe", describe, METH_O,
     "describe(conn) -> (file name, autocommit, total changes), read through the handle."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_txn", "Spool transactions in a native thread, without the GIL.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__txn(void) {
    if (PyType_Ready(&CommitterType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&CommitterType);
    if (PyModule_AddObject(m, "Committer", (PyObject *)&CommitterType) < 0) {
        Py_DECREF(&CommitterType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
