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
 * alone could not come within 1 us of the C loop. Here the array checks read
 * the array's own fields (below), the outputs are numpy arrays made by
 * numpy.empty, and the GIL is released while the engine runs.
 *
 * The fields are read through numpy's PyArrayObject_fields layout, declared
 * here rather than taken from numpy's headers so that the package builds
 * without numpy: numpy keeps this layout across 1.x and 2.x (compiled
 * extensions read it through PyArray_DATA and friends), and setup() checks it
 * against a real array before the first call. Not the buffer protocol:
 * numpy builds and frees a buffer description on every export, and a call
 * into the caller's arrays must allocate nothing.
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

/* numpy's PyArrayObject_fields, up to the flags; the NPY_ARRAY_* flags used. */
typedef struct {
    PyObject_HEAD
    char *data;
    int nd;
    Py_ssize_t *dimensions;
    Py_ssize_t *strides;
    PyObject *base;
    PyObject *descr;
    int flags;
} array_fields;
enum { ARRAY_C_CONTIGUOUS = 0x0001, ARRAY_ALIGNED = 0x0100, ARRAY_WRITEABLE = 0x0400 };

/* What setup() is given: numpy.ndarray, numpy.empty, numpy.dtype('uint8'), numpy.dtype('int32'), the refusal class. */
static PyObject *ndarray_type, *np_empty, *uint8_dtype, *int32_dtype, *refused;

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

/* An array of exactly numpy's base type with this dtype object (numpy's own
 * for uint8/int32; an equal but separate dtype is refused), C-contiguous and
 * aligned (and writable, if asked); NULL if not. */
static const array_fields *as_array(PyObject *obj, PyObject *dtype, int writable)
{
    if ((PyObject *)Py_TYPE(obj) != ndarray_type)
        return NULL;
    const array_fields *a = (const array_fields *)obj;
    const int need = ARRAY_C_CONTIGUOUS | ARRAY_ALIGNED | (writable ? ARRAY_WRITEABLE : 0);
    return a->descr == dtype && (a->flags & need) == need ? a : NULL;
}

static PyObject *entry_setup(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 6 || !PyType_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "setup(ndarray, empty, uint8, int32, refused, probe)");
        return NULL;
    }
    PyObject **slots[] = {&ndarray_type, &np_empty, &uint8_dtype, &int32_dtype, &refused};
    for (int i = 0; i < 5; i++)
        Py_XSETREF(*slots[i], Py_NewRef(args[i]));
    /* probe: (an int32 array of shape (3, 5), its data address) from numpy itself. */
    PyObject *probe = args[5];
    const array_fields *a = PyTuple_Check(probe) && PyTuple_GET_SIZE(probe) == 2
                                ? as_array(PyTuple_GET_ITEM(probe, 0), int32_dtype, 1)
                                : NULL;
    void *data = PyTuple_Check(probe) ? PyLong_AsVoidPtr(PyTuple_GET_ITEM(probe, 1)) : NULL;
    if (!a || a->data != data || a->nd != 2 || a->dimensions[0] != 3 || a->dimensions[1] != 5 ||
        a->strides[0] != 20 || a->strides[1] != 4) {
        Py_CLEAR(refused);
        PyErr_Clear();
        PyErr_SetString(PyExc_ImportError, "this numpy's array layout is not the one the engine's entry point reads");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The batch size of an image array for this model, or -1 if its shape does not fit. */
static Py_ssize_t batch_size(const array_fields *a, const bnn_model_info *mi)
{
    const Py_ssize_t c = mi->in_c, h = mi->in_h, w = mi->in_w, *s = a->dimensions;
    switch (a->nd) {
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

/* The int32 output array `arr`'s data if it has exactly shape (n) or (n, k); NULL if not. */
static int32_t *output_data(PyObject *arr, int ndim, Py_ssize_t n, Py_ssize_t k)
{
    const array_fields *a = as_array(arr, int32_dtype, 1);
    if (!a || a->nd != ndim || a->dimensions[0] != n || (ndim == 2 && a->dimensions[1] != k))
        return NULL;
    return (int32_t *)(void *)a->data;
}

static PyObject *new_int32(Py_ssize_t n, Py_ssize_t k)
{
    PyObject *shape = k ? Py_BuildValue("(nn)", n, k) : PyLong_FromSsize_t(n);
    if (!shape)
        return NULL;
    PyObject *args[] = {shape, int32_dtype};
    PyObject *arr = PyObject_Vectorcall(np_empty, args, 2, NULL);
    Py_DECREF(shape);
    if (arr && !as_array(arr, int32_dtype, 1)) {
        Py_DECREF(arr);
        PyErr_SetString(PyExc_RuntimeError, "numpy.empty made an array the engine cannot write");
        return NULL;
    }
    return arr;
}

struct outputs {
    PyObject *classes, *scores; /* new references, or NULL */
    int32_t *c, *s;
};

static void drop_outputs(struct outputs *o)
{
    Py_XDECREF(o->classes);
    Py_XDECREF(o->scores);
}

/* The caller's arrays (out) or new ones; 0 on success, -1 refused, -2 a Python error set. */
static int get_outputs(struct outputs *o, PyObject *out, int mode, Py_ssize_t n, Py_ssize_t k)
{
    memset(o, 0, sizeof(*o));
    if (out != Py_None) {
        if (mode == MODE_CLASSES)
            return (o->c = output_data(out, 1, n, 0)) ? 0 : -1;
        if (mode != MODE_BOTH || !PyTuple_CheckExact(out) || PyTuple_GET_SIZE(out) != 2)
            return -1;
        o->c = output_data(PyTuple_GET_ITEM(out, 0), 1, n, 0);
        o->s = output_data(PyTuple_GET_ITEM(out, 1), 2, n, k);
        return o->c && o->s ? 0 : -1;
    }
    if (mode != MODE_SCORES) {
        if (!(o->classes = new_int32(n, 0)))
            return -2;
        o->c = (int32_t *)(void *)((const array_fields *)o->classes)->data;
    }
    if (mode != MODE_CLASSES) {
        if (!(o->scores = new_int32(n, k)))
            return -2;
        o->s = (int32_t *)(void *)((const array_fields *)o->scores)->data;
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
    const array_fields *images = as_array(args[2], uint8_dtype, 0);
    if (!ctx || !model || threads < 0 || threads > 1024 || mode < 0 || mode > 2 || !images)
        return refuse(0);
    bnn_model_info mi;
    bnn_model_get_info(model, &mi);
    const Py_ssize_t n = batch_size(images, &mi), k = mi.n_classes;
    if (n < 0)
        return refuse(0);
    struct outputs o;
    int got = get_outputs(&o, args[4], (int)mode, n, k);
    if (got != 0) {
        drop_outputs(&o);
        return got == -1 ? refuse(0) : NULL;
    }
    /* scores() alone still needs the classes somewhere. */
    int32_t stack_classes[256], *classes = o.c ? o.c : stack_classes;
    if (!o.c && n > 256 && !(classes = PyMem_Malloc((size_t)n * sizeof(int32_t)))) {
        drop_outputs(&o);
        return PyErr_NoMemory();
    }
    const uint8_t *data = (const uint8_t *)images->data;
    /* The images array stays alive: the caller's argument holds it for the call. */
    int status = BNN_OK;
    if (n > 0) {
        Py_BEGIN_ALLOW_THREADS
        status = threads == 1 ? bnn_context_run(ctx, data, (size_t)n, classes, o.s)
                              : bnn_context_run_threads(ctx, data, (size_t)n, classes, o.s, (int)threads);
        Py_END_ALLOW_THREADS
    }
    if (!o.c && classes != stack_classes)
        PyMem_Free(classes);
    if (status != BNN_OK) {
        drop_outputs(&o);
        return refuse(status);
    }
    if (args[4] != Py_None) /* the caller's own arrays back: with out, a call allocates nothing */
        return Py_NewRef(args[4]);
    if (mode == MODE_CLASSES)
        return o.classes;
    if (mode == MODE_SCORES)
        return o.scores;
    PyObject *pair = PyTuple_Pack(2, o.classes, o.scores);
    drop_outputs(&o);
    return pair;
}

static PyMethodDef methods[] = {
    {"setup", (PyCFunction)(void (*)(void))entry_setup, METH_FASTCALL, "setup(ndarray, empty, uint8, int32, refused, probe)"},
    {"run", (PyCFunction)(void (*)(void))entry_run, METH_FASTCALL, "run(context, model, images, threads, out, mode)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_bnncpu", "The C engine's batch entry point.", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__bnncpu(void)
{
    return PyModule_Create(&module);
}
