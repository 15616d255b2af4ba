/*
 * The engine's Python entry point: CpuEngine's run/classify/scores in one C
 * call (METH_FASTCALL), compiled by setup.py into the same shared library
 * as the engine (bnnflow/bnncpu/_bnncpu*.so), which engine.py also opens
 * with ctypes for everything that is not a batch.
 *
 * Why not ctypes for the batch too: on the 2-core AMD EPYC (Zen 4, AVX-512)
 * this project is developed on, a bare ctypes call of bnn_context_run on a
 * TFC image cost 0.77 us against the C loop's 0.26 us, and getting the three
 * data pointers through `.ctypes.data` or `__array_interface__` cost several
 * microseconds more (benchmarks/cpu_inference.py prints the figures): ctypes
 * alone could not come within 1 us of the C loop. Here the array checks are
 * the buffer protocol's (the layout, dtype and shape in one call), the
 * outputs are numpy arrays made by numpy.empty, and the GIL is released
 * while the engine runs.
 *
 * Anything this path does not take (a closed engine, another type, dtype,
 * shape or layout, a bad `out`, a context in use by another thread, an
 * engine error) raises the exception class given to setup() with a status
 * (0, or the engine's negative one), and engine.py's checked path says what
 * is wrong or resolves it (a contiguous copy, another context).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "bnncpu.h"

/* What setup() is given: numpy.ndarray, numpy.empty, numpy.dtype('int32'), the refusal class. */
static PyObject *ndarray_type, *np_empty, *int32_dtype, *refused;

enum mode { MODE_CLASSES = 0, MODE_BOTH = 1, MODE_SCORES = 2 };

static PyObject *refuse(int status)
{
    PyObject *arg = PyLong_FromLong(status);
    if (arg) {
        PyErr_SetObject(refused, arg);
        Py_DECREF(arg);
    }
    return NULL;
}

static PyObject *entry_setup(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "setup(ndarray, empty, int32_dtype, refused)");
        return NULL;
    }
    PyObject **slots[] = {&ndarray_type, &np_empty, &int32_dtype, &refused};
    for (int i = 0; i < 4; i++) {
        Py_XSETREF(*slots[i], Py_NewRef(args[i]));
    }
    Py_RETURN_NONE;
}

/* The batch size of an image array for this model, or -1 if its shape does not fit. */
static Py_ssize_t batch_size(const Py_buffer *v, const bnn_model_info *mi)
{
    const Py_ssize_t c = mi->in_c, h = mi->in_h, w = mi->in_w, *s = v->shape;
    switch (v->ndim) {
    case 4:
        return s[1] == c && s[2] == h && s[3] == w ? s[0] : -1;
    case 3:
        if (s[0] == c && s[1] == h && s[2] == w)
            return 1;
        return c == 1 && s[1] == h && s[2] == w ? s[0] : -1;
    case 2:
        return c == 1 && s[0] == h && s[1] == w ? 1 : -1;
    default:
        return -1;
    }
}

static int is_uint8(const Py_buffer *v)
{
    return v->itemsize == 1 && v->format && (!strcmp(v->format, "B") || !strcmp(v->format, "=B"));
}

static int is_int32(const Py_buffer *v)
{
    const char *f = v->format;
    if (v->itemsize != 4 || !f)
        return 0;
    if (*f == '=' || *f == '@' || (*f == '<' && PY_LITTLE_ENDIAN) || (*f == '>' && !PY_LITTLE_ENDIAN))
        f++;
    return !strcmp(f, "i");
}

/* An int32 output array of exactly `len` elements, C-contiguous, writable; 0 if it is not. */
static int take_output(PyObject *arr, Py_buffer *v, Py_ssize_t ndim, Py_ssize_t n, Py_ssize_t k)
{
    if (!PyObject_TypeCheck(arr, (PyTypeObject *)ndarray_type))
        return 0;
    if (PyObject_GetBuffer(arr, v, PyBUF_RECORDS) != 0) {
        PyErr_Clear();
        return 0;
    }
    int ok = is_int32(v) && v->ndim == ndim && v->shape[0] == n && (ndim == 1 || v->shape[1] == k) &&
             PyBuffer_IsContiguous(v, 'C');
    if (!ok)
        PyBuffer_Release(v);
    return ok;
}

static PyObject *new_int32(Py_ssize_t n, Py_ssize_t k, Py_buffer *v)
{
    PyObject *shape = k ? Py_BuildValue("(nn)", n, k) : PyLong_FromSsize_t(n);
    if (!shape)
        return NULL;
    PyObject *args[] = {shape, int32_dtype};
    PyObject *arr = PyObject_Vectorcall(np_empty, args, 2, NULL);
    Py_DECREF(shape);
    if (arr && PyObject_GetBuffer(arr, v, PyBUF_RECORDS) != 0)
        Py_CLEAR(arr);
    return arr;
}

struct outputs {
    PyObject *classes, *scores; /* new references */
    Py_buffer cv, sv;
    int have_c, have_s;
};

static void drop_outputs(struct outputs *o)
{
    if (o->have_c)
        PyBuffer_Release(&o->cv);
    if (o->have_s)
        PyBuffer_Release(&o->sv);
    Py_XDECREF(o->classes);
    Py_XDECREF(o->scores);
}

/* The caller's arrays (out) or new ones; 0 on success, -1 refused, -2 a Python error set. */
static int get_outputs(struct outputs *o, PyObject *out, int mode, Py_ssize_t n, Py_ssize_t k)
{
    memset(o, 0, sizeof(*o));
    PyObject *oc = NULL, *os = NULL;
    if (out != Py_None) {
        if (mode == MODE_CLASSES)
            oc = out;
        else if (mode == MODE_BOTH && PyTuple_CheckExact(out) && PyTuple_GET_SIZE(out) == 2)
            oc = PyTuple_GET_ITEM(out, 0), os = PyTuple_GET_ITEM(out, 1);
        else
            return -1;
        if (!(o->have_c = take_output(oc, &o->cv, 1, n, 0)))
            return -1;
        o->classes = Py_NewRef(oc);
        if (os) {
            if (!(o->have_s = take_output(os, &o->sv, 2, n, k)))
                return -1;
            o->scores = Py_NewRef(os);
        }
        return 0;
    }
    if (mode != MODE_SCORES) {
        if (!(o->classes = new_int32(n, 0, &o->cv)))
            return -2;
        o->have_c = 1;
    }
    if (mode != MODE_CLASSES) {
        if (!(o->scores = new_int32(n, k, &o->sv)))
            return -2;
        o->have_s = 1;
    }
    return 0;
}

/* run(context, model, images, threads, out, mode) -> classes | (classes, scores) | scores
 * (context and model: the addresses engine.py holds; the context is the model's) */
static PyObject *entry_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 6 || !refused) {
        PyErr_SetString(PyExc_TypeError, "run(context, model, images, threads, out, mode) after setup()");
        return NULL;
    }
    bnn_context *ctx = PyLong_AsVoidPtr(args[0]);
    const bnn_model *model = PyLong_AsVoidPtr(args[1]);
    const long threads = PyLong_CheckExact(args[3]) ? PyLong_AsLong(args[3]) : -1;
    const long mode = PyLong_AsLong(args[5]);
    if (PyErr_Occurred())
        PyErr_Clear();
    if (!ctx || !model || threads < 0 || threads > 1024 || mode < 0 || mode > 2 ||
        !PyObject_TypeCheck(args[2], (PyTypeObject *)ndarray_type))
        return refuse(0);
    Py_buffer iv;
    if (PyObject_GetBuffer(args[2], &iv, PyBUF_RECORDS_RO) != 0) {
        PyErr_Clear();
        return refuse(0);
    }
    bnn_model_info mi;
    bnn_model_get_info(model, &mi);
    const Py_ssize_t n = batch_size(&iv, &mi), k = mi.n_classes;
    if (n < 0 || !is_uint8(&iv) || !PyBuffer_IsContiguous(&iv, 'C')) {
        PyBuffer_Release(&iv);
        return refuse(0);
    }
    struct outputs o;
    int got = get_outputs(&o, args[4], (int)mode, n, k);
    if (got != 0) {
        PyBuffer_Release(&iv);
        drop_outputs(&o);
        return got == -1 ? refuse(0) : NULL;
    }
    /* scores() alone still needs the classes somewhere. */
    int32_t stack_classes[256], *classes = o.have_c ? o.cv.buf : stack_classes;
    if (!o.have_c && n > 256 && !(classes = PyMem_Malloc((size_t)n * sizeof(int32_t)))) {
        PyBuffer_Release(&iv);
        drop_outputs(&o);
        return PyErr_NoMemory();
    }
    int32_t *scores = o.have_s ? o.sv.buf : NULL;
    int status = BNN_OK;
    if (n > 0) {
        Py_BEGIN_ALLOW_THREADS
        status = threads == 1 ? bnn_context_run(ctx, iv.buf, (size_t)n, classes, scores)
                              : bnn_context_run_threads(ctx, iv.buf, (size_t)n, classes, scores, (int)threads);
        Py_END_ALLOW_THREADS
    }
    if (classes != stack_classes && !o.have_c)
        PyMem_Free(classes);
    PyBuffer_Release(&iv);
    if (o.have_c)
        PyBuffer_Release(&o.cv), o.have_c = 0;
    if (o.have_s)
        PyBuffer_Release(&o.sv), o.have_s = 0;
    if (status != BNN_OK) {
        drop_outputs(&o);
        return refuse(status);
    }
    if (mode == MODE_CLASSES)
        return o.classes;
    if (mode == MODE_SCORES)
        return o.scores;
    PyObject *pair = PyTuple_Pack(2, o.classes, o.scores);
    drop_outputs(&o);
    return pair;
}

static PyMethodDef methods[] = {
    {"setup", (PyCFunction)(void (*)(void))entry_setup, METH_FASTCALL, "setup(ndarray, empty, int32_dtype, refused)"},
    {"run", (PyCFunction)(void (*)(void))entry_run, METH_FASTCALL, "run(context, model, images, threads, out, mode)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_bnncpu", "The C engine's batch entry point.", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__bnncpu(void)
{
    return PyModule_Create(&module);
}
