#include <Python.h>
#include <qsum.h>

static PyObject *f(PyObject *self, PyObject *arg) {
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    return PyLong_FromLong(qsum(n));
}
static PyMethodDef methods[] = {{"qsum", f, METH_O, "1 + 2 + ... + n, computed by libqsum"}, {0}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_q", 0, -1, methods};
PyMODINIT_FUNC PyInit__q(void) { return PyModule_Create(&module); }
