/* The spool writer's row loop in C: an optional accelerator of
 * edge_runtime.spool._encode.RowEncoder._rows, which stays the reference and the fallback.
 *
 * It builds, for each envelope (or summary with a SiteWrap), the stored payload byte for
 * byte as the Python loop does, its CRC32 and the eight columns of its row, appended to the
 * caller's flat list. It takes only the common case on itself: float times, a 32-character
 * id, a sequence number that msgpack writes as uint16 or uint32, no attrs, and stats whose
 * values are floats, ints, bools or None. Any other item goes to the Python callback `slow`,
 * which encodes it with the Python loop (and raises where that raises).
 *
 * Everything that is cached (the constant prefix per site fields, the block per stream) stays
 * in Python objects owned by the RowEncoder; this file only reads them, calling back into
 * Python on a miss.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Attributes read from each item. Envelopes and summaries are slots dataclasses: their
 * fields are member descriptors at fixed offsets, which are read directly (as the descriptor
 * itself would) once the item's exact type has been checked; any other type goes through
 * PyObject_GetAttr. */
static const char *field_names[] = {"site", "version", "config_hash", "replayed", "created_at", "backlog", "id", "kind", "revision", "pipeline", "key", "window_start", "window_end", "attrs", "stats"};
enum {F_SITE, F_VERSION, F_CONFIG_HASH, F_REPLAYED, F_CREATED_AT, F_BACKLOG, F_ID, F_KIND, F_REVISION, F_PIPELINE, F_KEY, F_WINDOW_START, F_WINDOW_END, F_ATTRS, F_STATS, NFIELDS};
static PyObject *field_strs[NFIELDS];

typedef struct {
    PyTypeObject *type; /* owned: kept alive so that its address is not reused */
    unsigned int tag;   /* tp_version_tag when the offsets were read */
    Py_ssize_t off[NFIELDS]; /* -1: not a plain object slot, use PyObject_GetAttr */
} Layout;

static Layout layouts[2];

/* The field offsets of `type` into *out; 0 when there are none to use (PyObject_GetAttr then).
 * The cache is only a shortcut: callers keep their own copy, since another thread may enter
 * (while a callback runs) and replace cache entries. */
static int layout_of(PyTypeObject *type, Layout *out) {
    for (int i = 0; i < 2; i++) {
        if (layouts[i].type == type && PyType_HasFeature(type, Py_TPFLAGS_VALID_VERSION_TAG) &&
            type->tp_version_tag == layouts[i].tag) {
            *out = layouts[i];
            return 1;
        }
    }
    Py_ssize_t off[NFIELDS];
    for (int f = 0; f < NFIELDS; f++) {
        PyObject *descr = _PyType_Lookup(type, field_strs[f]); /* borrowed; tags the type */
        off[f] = -1;
        if (descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
            if (m->type == T_OBJECT_EX && !(m->flags & READ_RESTRICTED)) off[f] = m->offset;
        }
    }
    if (!PyType_HasFeature(type, Py_TPFLAGS_VALID_VERSION_TAG)) return 0;
    Layout *l = NULL;
    for (int i = 0; i < 2 && l == NULL; i++) {
        if (layouts[i].type == type) l = &layouts[i]; /* the type changed since */
    }
    for (int i = 0; i < 2 && l == NULL; i++) {
        if (layouts[i].type == NULL) l = &layouts[i];
    }
    if (l == NULL) { /* both taken: drop the older (slot 1), slot 0 moves down */
        Py_DECREF((PyObject *)layouts[1].type);
        layouts[1] = layouts[0];
        layouts[0].type = NULL;
        l = &layouts[0];
    }
    Py_INCREF((PyObject *)type);
    Py_XDECREF((PyObject *)l->type);
    l->type = type;
    l->tag = type->tp_version_tag;
    memcpy(l->off, off, sizeof off);
    *out = *l;
    return 1;
}

/* A new reference to item.<field>, or NULL with an exception set. */
static inline PyObject *get_field(PyObject *item, Layout *l, int f) {
    if (l != NULL && l->off[f] >= 0) {
        PyObject *v = *(PyObject **)((char *)item + l->off[f]);
        if (v != NULL) return Py_NewRef(v);
    }
    return PyObject_GetAttr(item, field_strs[f]);
}

#define STATS_MAX 4096 /* stats larger than this when packed go to the slow path */


/* CRC-32 (the zlib polynomial, reflected), slicing by 8; equals zlib.crc32 */
static uint32_t crc_table[8][256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = crc_table[0][i];
        for (int t = 1; t < 8; t++) {
            c = crc_table[0][c & 0xff] ^ (c >> 8);
            crc_table[t][i] = c;
        }
    }
}

static uint32_t crc32_of(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
#if PY_LITTLE_ENDIAN
    while (n >= 8) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
        lo ^= c;
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
            crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xff] ^
            crc_table[2][(hi >> 8) & 0xff] ^ crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
#endif
    while (n--) c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

typedef struct {
    char *p;
    char *end;
} Buf;

static inline int put(Buf *b, const void *src, Py_ssize_t n) {
    if (b->end - b->p < n) return -1;
    memcpy(b->p, src, (size_t)n);
    b->p += n;
    return 0;
}

static inline int put_byte(Buf *b, unsigned char c) {
    if (b->p >= b->end) return -1;
    *b->p++ = (char)c;
    return 0;
}

static inline int put_be(Buf *b, uint64_t v, int n) {
    if (b->end - b->p < n) return -1;
    for (int i = n - 1; i >= 0; i--) {
        b->p[i] = (char)(v & 0xff);
        v >>= 8;
    }
    b->p += n;
    return 0;
}

static inline int put_double(Buf *b, double d) {
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    return put_be(b, bits, 8);
}

/* msgpack str header and bytes, as msgpack-python writes them (use_bin_type=True) */
static int put_str(Buf *b, PyObject *s) {
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(s, &n);
    if (utf8 == NULL) return -2;
    int rc;
    if (n < 32) {
        rc = put_byte(b, (unsigned char)(0xa0 | n));
    } else if (n < 256) {
        rc = put_byte(b, 0xd9) || put_byte(b, (unsigned char)n);
    } else if (n < 65536) {
        rc = put_byte(b, 0xda) || put_be(b, (uint64_t)n, 2);
    } else {
        rc = put_byte(b, 0xdb) || put_be(b, (uint64_t)n, 4);
    }
    if (rc) return -1;
    return put(b, utf8, n);
}

/* msgpack int, the smallest form, as msgpack-python chooses it */
static int put_int(Buf *b, long long v) {
    if (v < -(1LL << 5)) {
        if (v < -(1LL << 15)) {
            if (v < -(1LL << 31)) return put_byte(b, 0xd3) || put_be(b, (uint64_t)v, 8);
            return put_byte(b, 0xd2) || put_be(b, (uint64_t)(uint32_t)(int32_t)v, 4);
        }
        if (v < -(1LL << 7)) return put_byte(b, 0xd1) || put_be(b, (uint64_t)(uint16_t)(int16_t)v, 2);
        return put_byte(b, 0xd0) || put_byte(b, (unsigned char)(int8_t)v);
    }
    if (v < (1LL << 7)) return put_byte(b, (unsigned char)(int8_t)v); /* fixint, + or - */
    if (v < (1LL << 8)) return put_byte(b, 0xcc) || put_byte(b, (unsigned char)v);
    if (v < (1LL << 16)) return put_byte(b, 0xcd) || put_be(b, (uint64_t)v, 2);
    if (v < (1LL << 32)) return put_byte(b, 0xce) || put_be(b, (uint64_t)v, 4);
    return put_byte(b, 0xcf) || put_be(b, (uint64_t)v, 8);
}

/* The stats map. 0: packed; 1: not a case for this loop (slow path); -1: Python error. */
static int put_stats(Buf *b, PyObject *stats) {
    if (!PyDict_CheckExact(stats)) return 1;
    Py_ssize_t n = PyDict_GET_SIZE(stats);
    int rc = n < 16 ? put_byte(b, (unsigned char)(0x80 | n))
                    : (n < 65536 ? (put_byte(b, 0xde) || put_be(b, (uint64_t)n, 2))
                                 : (put_byte(b, 0xdf) || put_be(b, (uint64_t)n, 4)));
    if (rc) return 1;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(stats, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key)) return 1;
        int k = put_str(b, key);
        if (k == -2) { /* not encodable as UTF-8: the Python loop says what it makes of it */
            PyErr_Clear();
            return 1;
        }
        if (k) return 1;
        if (PyFloat_CheckExact(value)) {
            double d = PyFloat_AS_DOUBLE(value);
            rc = isfinite(d) ? (put_byte(b, 0xcb) || put_double(b, d)) : put_byte(b, 0xc0);
        } else if (value == Py_None) {
            rc = put_byte(b, 0xc0);
        } else if (value == Py_True || value == Py_False) {
            rc = put_byte(b, value == Py_True ? 0xc3 : 0xc2);
        } else if (PyLong_CheckExact(value)) {
            int overflow = 0;
            long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
            if (overflow) return 1;
            if (v == -1 && PyErr_Occurred()) return -1;
            rc = put_int(b, v);
        } else {
            return 1;
        }
        if (rc) return 1;
    }
    return 0;
}

typedef struct {
    PyObject *site, *version, *config_hash, *kind, *revision, *replayed;
} PrefixKey;

/* encode(items, wrap_fields, fixed, seq, flat, counts, consts, prefixes, prefix_fn, streams,
 *        stream_fn, eid_fn, slow) -> (next_seq, nbytes)
 *
 * wrap_fields: None (items are envelopes) or (site, version, config_hash, created_at,
 *              replayed) of a SiteWrap (items are summaries; eid_fn(site, item) gives ids).
 * fixed: the priority class of every item, or -1 (by kind and backlog).
 * consts: (k_window_start, k_window_end, k_created_at, k_id32, tail_live, tail_backlog).
 * prefixes: {(site, version, config_hash, kind, revision, replayed): bytes}; prefix_fn(key)
 *           fills it on a miss and returns the prefix.
 * streams: {pipeline: {key: (block, stream)}}; stream_fn(pipeline, key) on a miss.
 * slow(item, seq) -> nbytes: the Python loop for one item (appends its own row).
 */
static PyObject *encode(PyObject *self, PyObject *args) {
    PyObject *items, *wrap, *flat, *counts, *consts, *prefixes, *prefix_fn, *streams, *stream_fn,
        *eid_fn, *slow;
    int fixed;
    unsigned long long seq;
    if (!PyArg_ParseTuple(args, "OOiKO!O!O!O!OO!OOO", &items, &wrap, &fixed, &seq, &PyList_Type,
                          &flat, &PyList_Type, &counts, &PyTuple_Type, &consts, &PyDict_Type,
                          &prefixes, &prefix_fn, &PyDict_Type, &streams, &stream_fn, &eid_fn,
                          &slow))
        return NULL;
    if (PyTuple_GET_SIZE(consts) != 6 || PyList_GET_SIZE(counts) != 3 || fixed < -1 ||
        fixed > 2) {
        PyErr_SetString(PyExc_ValueError, "consts must have 6 entries, counts 3, fixed -1..2");
        return NULL;
    }
    const char *k_ws, *k_we, *k_ca, *k_id;
    Py_ssize_t n_ws, n_we, n_ca, n_id;
    PyObject *tails[2];
    for (int i = 0; i < 6; i++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(consts, i))) {
            PyErr_SetString(PyExc_TypeError, "consts must be bytes");
            return NULL;
        }
    }
    k_ws = PyBytes_AS_STRING(PyTuple_GET_ITEM(consts, 0));
    n_ws = PyBytes_GET_SIZE(PyTuple_GET_ITEM(consts, 0));
    k_we = PyBytes_AS_STRING(PyTuple_GET_ITEM(consts, 1));
    n_we = PyBytes_GET_SIZE(PyTuple_GET_ITEM(consts, 1));
    k_ca = PyBytes_AS_STRING(PyTuple_GET_ITEM(consts, 2));
    n_ca = PyBytes_GET_SIZE(PyTuple_GET_ITEM(consts, 2));
    k_id = PyBytes_AS_STRING(PyTuple_GET_ITEM(consts, 3));
    n_id = PyBytes_GET_SIZE(PyTuple_GET_ITEM(consts, 3));
    tails[0] = PyTuple_GET_ITEM(consts, 4);
    tails[1] = PyTuple_GET_ITEM(consts, 5);

    PyObject *seq_items = PySequence_Fast(items, "items must be a sequence");
    if (seq_items == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq_items);
    PyObject **elems = PySequence_Fast_ITEMS(seq_items);

    PyObject *w_site = NULL, *w_version = NULL, *w_config_hash = NULL, *w_created_at = NULL,
             *w_replayed = NULL;
    if (wrap != Py_None) {
        if (!PyTuple_Check(wrap) || PyTuple_GET_SIZE(wrap) != 5) {
            Py_DECREF(seq_items);
            PyErr_SetString(PyExc_TypeError, "wrap fields must be a 5-tuple");
            return NULL;
        }
        w_site = PyTuple_GET_ITEM(wrap, 0);
        w_version = PyTuple_GET_ITEM(wrap, 1);
        w_config_hash = PyTuple_GET_ITEM(wrap, 2);
        w_created_at = PyTuple_GET_ITEM(wrap, 3);
        w_replayed = PyTuple_GET_ITEM(wrap, 4);
    }

    long long class_counts[3] = {0, 0, 0};
    long long nbytes = 0;
    PrefixKey last = {NULL, NULL, NULL, NULL, NULL, NULL};
    PyObject *prefix = NULL;        /* owned */
    PyObject *last_pipeline = NULL; /* owned */
    PyObject *keys = NULL;          /* owned: the stream blocks of last_pipeline */
    char stats_buf[STATS_MAX];
    char *payload_buf = NULL;
    Py_ssize_t payload_cap = 0;
    PyObject *result = NULL;
    PyTypeObject *last_type = NULL; /* the previous item's type and its field offsets */
    Layout local;
    Layout *layout = NULL;

    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = elems[i];
        PyObject *site = NULL, *version = NULL, *config_hash = NULL, *replayed = NULL,
                 *created_at = NULL, *backlog = NULL, *eid = NULL, *kind = NULL,
                 *revision = NULL, *pipeline = NULL, *key = NULL, *ws = NULL, *we = NULL,
                 *attrs = NULL, *stats = NULL;
        int ok = 0; /* 1: encoded here; 0: slow path; -1: error */
        int is_backlog = 0;
        if (Py_TYPE(item) != last_type) { /* the item keeps its type alive */
            last_type = Py_TYPE(item);
            layout = layout_of(last_type, &local) ? &local : NULL;
        }
        if (w_site == NULL) {
            if (!(site = get_field(item, layout, F_SITE))) goto item_error;
            if (!(version = get_field(item, layout, F_VERSION))) goto item_error;
            if (!(config_hash = get_field(item, layout, F_CONFIG_HASH))) goto item_error;
            if (!(replayed = get_field(item, layout, F_REPLAYED))) goto item_error;
            if (!(created_at = get_field(item, layout, F_CREATED_AT))) goto item_error;
            if (!(backlog = get_field(item, layout, F_BACKLOG))) goto item_error;
            if (!(eid = get_field(item, layout, F_ID))) goto item_error;
        } else {
            site = Py_NewRef(w_site);
            version = Py_NewRef(w_version);
            config_hash = Py_NewRef(w_config_hash);
            replayed = Py_NewRef(w_replayed);
            created_at = Py_NewRef(w_created_at);
            backlog = Py_NewRef(Py_False);
            if (!(eid = PyObject_CallFunctionObjArgs(eid_fn, site, item, NULL))) goto item_error;
        }
        if (!(kind = get_field(item, layout, F_KIND))) goto item_error;
        if (!(revision = get_field(item, layout, F_REVISION))) goto item_error;
        if (!(pipeline = get_field(item, layout, F_PIPELINE))) goto item_error;
        if (!(key = get_field(item, layout, F_KEY))) goto item_error;
        if (!(ws = get_field(item, layout, F_WINDOW_START))) goto item_error;
        if (!(we = get_field(item, layout, F_WINDOW_END))) goto item_error;
        if (!(attrs = get_field(item, layout, F_ATTRS))) goto item_error;
        if (!(stats = get_field(item, layout, F_STATS))) goto item_error;

        /* the common case only; anything else is the slow path's */
        if (!PyFloat_CheckExact(ws) || !PyFloat_CheckExact(we) || !PyFloat_CheckExact(created_at))
            goto item_slow;
        if (!PyUnicode_CheckExact(eid) || !PyUnicode_IS_ASCII(eid) ||
            PyUnicode_GET_LENGTH(eid) != 32)
            goto item_slow;
        if (!PyUnicode_CheckExact(pipeline) || !PyUnicode_CheckExact(key)) goto item_slow;
        if (seq <= 0xff || seq > 0xffffffffULL) goto item_slow;
        {
            int has_attrs = PyObject_IsTrue(attrs);
            if (has_attrs < 0) goto item_error;
            if (has_attrs) goto item_slow;
            is_backlog = PyObject_IsTrue(backlog);
            if (is_backlog < 0) goto item_error;
        }

        /* the constant prefix */
        if (!(site == last.site && version == last.version && config_hash == last.config_hash &&
              kind == last.kind && revision == last.revision && replayed == last.replayed)) {
            PyObject *pkey = PyTuple_Pack(6, site, version, config_hash, kind, revision, replayed);
            if (pkey == NULL) goto item_error;
            PyObject *found = PyDict_GetItemWithError(prefixes, pkey); /* borrowed */
            if (found != NULL) {
                Py_INCREF(found);
            } else if (PyErr_Occurred()) {
                Py_DECREF(pkey);
                goto item_error;
            } else {
                found = PyObject_CallOneArg(prefix_fn, pkey);
            }
            Py_DECREF(pkey);
            if (found == NULL) goto item_error;
            if (!PyBytes_Check(found)) {
                Py_DECREF(found);
                PyErr_SetString(PyExc_TypeError, "prefix_fn must return bytes");
                goto item_error;
            }
            Py_XSETREF(prefix, found);
            /* held, so that an identity match below is never a reused address */
            Py_XSETREF(last.site, Py_NewRef(site));
            Py_XSETREF(last.version, Py_NewRef(version));
            Py_XSETREF(last.config_hash, Py_NewRef(config_hash));
            Py_XSETREF(last.kind, Py_NewRef(kind));
            Py_XSETREF(last.revision, Py_NewRef(revision));
            Py_XSETREF(last.replayed, Py_NewRef(replayed));
        }

        /* the stream block */
        PyObject *entry;
        if (pipeline != last_pipeline) {
            PyObject *found = PyDict_GetItemWithError(streams, pipeline);
            if (found == NULL && PyErr_Occurred()) goto item_error;
            Py_XSETREF(keys, Py_XNewRef(found));
            Py_XSETREF(last_pipeline, Py_NewRef(pipeline));
        }
        entry = keys != NULL ? PyDict_GetItemWithError(keys, key) : NULL; /* borrowed */
        if (entry != NULL) {
            Py_INCREF(entry);
        } else if (PyErr_Occurred()) {
            goto item_error;
        } else {
            entry = PyObject_CallFunctionObjArgs(stream_fn, pipeline, key, NULL);
            if (entry == NULL) goto item_error;
            PyObject *found = PyDict_GetItemWithError(streams, pipeline); /* made by stream_fn */
            if (found == NULL && PyErr_Occurred()) {
                Py_DECREF(entry);
                goto item_error;
            }
            Py_XSETREF(keys, Py_XNewRef(found));
        }
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2 ||
            !PyBytes_Check(PyTuple_GET_ITEM(entry, 0))) {
            Py_DECREF(entry);
            PyErr_SetString(PyExc_TypeError, "stream_fn must return (bytes, str)");
            goto item_error;
        }

        {
            Buf sb = {stats_buf, stats_buf + STATS_MAX};
            int st = put_stats(&sb, stats);
            if (st < 0) {
                Py_DECREF(entry);
                goto item_error;
            }
            if (st > 0) {
                Py_DECREF(entry);
                goto item_slow;
            }
            PyObject *block = PyTuple_GET_ITEM(entry, 0);
            PyObject *stream = PyTuple_GET_ITEM(entry, 1);
            PyObject *tail = tails[is_backlog ? 1 : 0];
            Py_ssize_t head_len = (seq > 0xffff ? 5 : 3) + n_ws + 8 + n_we + 8 + n_ca + 8 + n_id + 32;
            Py_ssize_t stats_len = sb.p - stats_buf;
            Py_ssize_t total = PyBytes_GET_SIZE(prefix) + head_len + PyBytes_GET_SIZE(block) +
                               stats_len + PyBytes_GET_SIZE(tail);
            if (total > payload_cap) {
                char *grown = PyMem_Realloc(payload_buf, (size_t)total);
                if (grown == NULL) {
                    Py_DECREF(entry);
                    PyErr_NoMemory();
                    goto item_error;
                }
                payload_buf = grown;
                payload_cap = total;
            }
            Buf pb = {payload_buf, payload_buf + total};
            int rc = put(&pb, PyBytes_AS_STRING(prefix), PyBytes_GET_SIZE(prefix));
            if (seq > 0xffff)
                rc = rc || put_byte(&pb, 0xce) || put_be(&pb, seq, 4);
            else
                rc = rc || put_byte(&pb, 0xcd) || put_be(&pb, seq, 2);
            rc = rc || put(&pb, k_ws, n_ws) || put_double(&pb, PyFloat_AS_DOUBLE(ws));
            rc = rc || put(&pb, k_we, n_we) || put_double(&pb, PyFloat_AS_DOUBLE(we));
            rc = rc || put(&pb, k_ca, n_ca) || put_double(&pb, PyFloat_AS_DOUBLE(created_at));
            rc = rc || put(&pb, k_id, n_id) || put(&pb, PyUnicode_DATA(eid), 32);
            rc = rc || put(&pb, PyBytes_AS_STRING(block), PyBytes_GET_SIZE(block));
            rc = rc || put(&pb, stats_buf, stats_len);
            rc = rc || put(&pb, PyBytes_AS_STRING(tail), PyBytes_GET_SIZE(tail));
            if (rc || pb.p != pb.end) {
                Py_DECREF(entry);
                PyErr_SetString(PyExc_SystemError, "payload size mismatch");
                goto item_error;
            }
            PyObject *payload = PyByteArray_FromStringAndSize(payload_buf, total);
            if (payload == NULL) {
                Py_DECREF(entry);
                goto item_error;
            }
            PyObject *crc =
                PyLong_FromUnsignedLong(crc32_of((const unsigned char *)payload_buf, (size_t)total));
            int cls;
            if (fixed >= 0) {
                cls = fixed;
            } else if (PyUnicode_Check(kind) && PyUnicode_CompareWithASCIIString(kind, "alert") == 0) {
                cls = 0;
            } else {
                cls = is_backlog ? 2 : 1;
            }
            /* the row id: priority class << 56 | seq (records.PRIORITY_SHIFT; tests check it) */
            PyObject *rid = PyLong_FromUnsignedLongLong(((unsigned long long)cls << 56) | seq);
            int failed = crc == NULL || rid == NULL;
            failed = failed || PyList_Append(flat, rid) < 0;
            failed = failed || PyList_Append(flat, stream) < 0;
            failed = failed || PyList_Append(flat, eid) < 0;
            failed = failed || PyList_Append(flat, ws) < 0;
            failed = failed || PyList_Append(flat, we) < 0;
            failed = failed || PyList_Append(flat, created_at) < 0;
            failed = failed || PyList_Append(flat, crc) < 0;
            failed = failed || PyList_Append(flat, payload) < 0;
            Py_XDECREF(rid);
            Py_XDECREF(crc);
            Py_DECREF(payload);
            Py_DECREF(entry);
            if (failed) goto item_error;
            class_counts[cls] += 1;
            nbytes += total;
            seq += 1;
            ok = 1;
        }
        goto item_done;

    item_slow: {
        PyObject *seq_obj = PyLong_FromUnsignedLongLong(seq);
        PyObject *got = seq_obj ? PyObject_CallFunctionObjArgs(slow, item, seq_obj, NULL) : NULL;
        Py_XDECREF(seq_obj);
        if (got == NULL) goto item_error;
        long long n = PyLong_AsLongLong(got);
        Py_DECREF(got);
        if (n == -1 && PyErr_Occurred()) goto item_error;
        nbytes += n;
        seq += 1;
        ok = 1;
        goto item_done;
    }
    item_error:
        ok = -1;
    item_done:
        Py_XDECREF(site);
        Py_XDECREF(version);
        Py_XDECREF(config_hash);
        Py_XDECREF(replayed);
        Py_XDECREF(created_at);
        Py_XDECREF(backlog);
        Py_XDECREF(eid);
        Py_XDECREF(kind);
        Py_XDECREF(revision);
        Py_XDECREF(pipeline);
        Py_XDECREF(key);
        Py_XDECREF(ws);
        Py_XDECREF(we);
        Py_XDECREF(attrs);
        Py_XDECREF(stats);
        if (ok < 0) goto done;
    }
    for (int c = 0; c < 3; c++) {
        if (class_counts[c] == 0) continue;
        PyObject *old = PyList_GET_ITEM(counts, c);
        PyObject *add = PyLong_FromLongLong(class_counts[c]);
        if (add == NULL) goto done;
        PyObject *sum = PyNumber_Add(old, add);
        Py_DECREF(add);
        if (sum == NULL) goto done;
        if (PyList_SetItem(counts, c, sum) < 0) goto done;
    }
    result = Py_BuildValue("(KL)", seq, nbytes);
done:
    Py_XDECREF(last.site);
    Py_XDECREF(last.version);
    Py_XDECREF(last.config_hash);
    Py_XDECREF(last.kind);
    Py_XDECREF(last.revision);
    Py_XDECREF(last.replayed);
    Py_XDECREF(keys);
    Py_XDECREF(prefix);
    Py_XDECREF(last_pipeline);
    PyMem_Free(payload_buf);
    Py_DECREF(seq_items);
    return result;
}

static PyMethodDef methods[] = {
    {"encode", encode, METH_VARARGS, "Encode spool rows (see edge_runtime.spool._encode)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rows", "The spool writer's row loop, compiled.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rows(void) {
    for (int f = 0; f < NFIELDS; f++) {
        if (!(field_strs[f] = PyUnicode_InternFromString(field_names[f]))) return NULL;
    }
    crc_init();
    return PyModule_Create(&module);
}
