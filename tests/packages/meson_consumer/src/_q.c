#include <Python.h>
#include <qsum.h>

static PyObject *f(PyObject *self, PyObject *arg) { return PyLong_FromLong(qsum(PyLong_AsLong(arg))); }
static PyMethodDef M[] = {{"qsum", f, METH_O, 0}, {0}};
static struct PyModuleDef D = {PyModuleDef_HEAD_INIT, "_q", 0, -1, M};
PyMODINIT_FUNC PyInit__q(void) { return PyModule_Create(&D); }
