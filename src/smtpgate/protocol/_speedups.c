/*
 * One pass over complete DATA lines: where the body ends, whether any line
 * is dot-stuffed, whether a bare CR or LF occurs (RFC 5321 sections
 * 4.1.1.4, 4.5.2, 2.3.8). The optional C twin of framing._scan_lines; the
 * framer behaves the same with either (tests compare them on random input).
 *
 * scan_lines(buf: bytes, at_line_start: bool, start=0, stop=len(buf))
 *                  -> (end, stuffed, bare)
 *   buf[start:stop] complete lines, ending with LF (the framer keeps any
 *                  partial line back); indexes are into buf
 *   at_line_start  the bytes before ``lines`` ended in CRLF
 *   end            index of the "." of the first ".\r\n" line that starts
 *                  after a real CRLF, or -1
 *   stuffed        a line before ``end`` starts with "."
 *   bare           a CR or LF before ``end`` is not part of a CRLF pair
 * Line by line with memchr, so the cost is a few SIMD scans per line.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static PyObject *
scan_lines(PyObject *self, PyObject *args)
{
    Py_buffer view;
    int at_line_start;
    Py_ssize_t start = 0, stop = -1;
    if (!PyArg_ParseTuple(args, "y*p|nn", &view, &at_line_start, &start, &stop))
        return NULL;
    if (stop < 0 || stop > view.len)
        stop = view.len;
    if (start < 0 || start > stop) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "bad start/stop");
        return NULL;
    }
    const char *buf = (const char *)view.buf;
    Py_ssize_t len = stop, pos = start, end = -1;
    int stuffed = 0, bare = 0, line_start = at_line_start;

    while (pos < len) {
        const char *lf = memchr(buf + pos, '\n', (size_t)(len - pos));
        Py_ssize_t next = lf ? (Py_ssize_t)(lf - buf) + 1 : len;
        if (line_start && buf[pos] == '.') {
            if (next - pos == 3 && buf[pos + 1] == '\r' && buf[pos + 2] == '\n') {
                end = pos;
                break;
            }
            stuffed = 1;
        }
        /* The only CR allowed in a line is the one right before its LF. */
        Py_ssize_t body_end = next;
        int crlf = lf && next - pos >= 2 && buf[next - 2] == '\r';
        if (crlf)
            body_end = next - 2;
        else if (lf)
            body_end = next - 1;
        if (!crlf && lf)
            bare = 1;
        if (body_end > pos && memchr(buf + pos, '\r', (size_t)(body_end - pos)))
            bare = 1;
        line_start = crlf;
        pos = next;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("nOO", end, stuffed ? Py_True : Py_False, bare ? Py_True : Py_False);
}

static PyMethodDef methods[] = {
    {"scan_lines", scan_lines, METH_VARARGS, "Scan complete DATA lines (see the module source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "smtpgate.protocol._speedups", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
