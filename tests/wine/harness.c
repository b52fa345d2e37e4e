/* harness.exe: replay preloads, then load an extension module the way CPython (>= 3.8) does.
 *
 *   harness.exe PRELOADS_FILE CONSUMER_DLL INIT_SYMBOL [DEP_NAME...]
 *
 * PRELOADS_FILE  UTF-8 text, one preload per line: FLAGS_HEX<TAB>ABSOLUTE_WINDOWS_PATH
 *                ("-" or "" for none; blank lines and lines starting with '#' are skipped).
 *                Each line is replayed as LoadLibraryExW(path, NULL, flags).
 * CONSUMER_DLL   loaded exactly like Python/dynload_win.c: SetErrorMode(SEM_FAILCRITICALERRORS),
 *                LoadLibraryExW(path, NULL, LOAD_LIBRARY_SEARCH_DEFAULT_DIRS |
 *                LOAD_LIBRARY_SEARCH_DLL_LOAD_DIR), error text from FormatMessageW without "\r\n".
 * INIT_SYMBOL    int (*)(void) looked up with GetProcAddress and called.
 * DEP_NAME       module names whose loaded file is reported (GetModuleHandleW + GetModuleFileNameW).
 *
 * Output (UTF-8, one line each, written with WriteFile so nothing sits in a CRT buffer):
 *   preload <FLAGS_HEX> <path>                 after each successful preload
 *   preload-error <path> <code> <message>      exit 2
 *   load-error <code> <message>                exit 3
 *   symbol-error <symbol> <code> <message>     exit 4
 *   init-result <value>
 *   dep <name> <file> | dep <name> not-loaded  exit 0
 *   usage-error / preloads-error ...           exit 1
 * Build: x86_64-w64-mingw32-gcc -municode -O1 -o harness.exe harness.c
 */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <wchar.h>

static void out(const wchar_t *fmt, ...)
{
    wchar_t wbuf[4096];
    char buf[4 * 4096];
    va_list ap;
    va_start(ap, fmt);
    int n = _vsnwprintf(wbuf, 4094, fmt, ap);
    va_end(ap);
    if (n < 0) n = 4094;
    wbuf[n++] = L'\n';
    int len = WideCharToMultiByte(CP_UTF8, 0, wbuf, n, buf, (int)sizeof(buf), NULL, NULL);
    DWORD written;
    HANDLE h = GetStdHandle(STD_OUTPUT_HANDLE);
    WriteFile(h, buf, (DWORD)len, &written, NULL);
    FlushFileBuffers(h);
}

/* FormatMessageW text for code, trailing "\r\n"/blanks/dots kept except the line break. */
static const wchar_t *message(DWORD code)
{
    static wchar_t text[512];
    DWORD n = FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL, code,
                             MAKELANGID(LANG_NEUTRAL, SUBLANG_DEFAULT), text,
                             sizeof(text) / sizeof(text[0]), NULL);
    if (n == 0) {
        _snwprintf(text, 511, L"(no message for %lu)", (unsigned long)code);
        return text;
    }
    while (n > 0 && (text[n - 1] == L'\r' || text[n - 1] == L'\n' || text[n - 1] == L' ')) text[--n] = 0;
    return text;
}

static int replay_preloads(const wchar_t *file)
{
    if (file[0] == 0 || wcscmp(file, L"-") == 0) return 0;
    HANDLE h = CreateFileW(file, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING, 0, NULL);
    if (h == INVALID_HANDLE_VALUE) {
        DWORD code = GetLastError();
        out(L"preloads-error %ls %lu %ls", file, (unsigned long)code, message(code));
        return 1;
    }
    DWORD size = GetFileSize(h, NULL), got = 0;
    char *data = malloc(size + 1);
    if (!data || !ReadFile(h, data, size, &got, NULL) || got != size) {
        out(L"preloads-error %ls read-failed", file);
        CloseHandle(h);
        return 1;
    }
    CloseHandle(h);
    data[size] = 0;
    char *line = data;
    if (size >= 3 && (unsigned char)data[0] == 0xEF && (unsigned char)data[1] == 0xBB
        && (unsigned char)data[2] == 0xBF)
        line += 3; /* UTF-8 BOM */
    while (line && *line) {
        char *next = strchr(line, '\n');
        if (next) *next++ = 0;
        size_t len = strlen(line);
        while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' ')) line[--len] = 0;
        if (len == 0 || line[0] == '#') { line = next; continue; }
        char *tab = strchr(line, '\t');
        if (!tab) {
            out(L"preloads-error bad-line (no TAB): %hs", line);
            return 1;
        }
        *tab = 0;
        char *end;
        unsigned long flags = strtoul(line, &end, 16);
        if (end == line || *end) {
            out(L"preloads-error bad-flags: %hs", line);
            return 1;
        }
        wchar_t path[32768];
        if (!MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, tab + 1, -1, path, 32768)) {
            out(L"preloads-error bad-utf8-path");
            return 1;
        }
        if (!LoadLibraryExW(path, NULL, (DWORD)flags)) {
            DWORD code = GetLastError();
            out(L"preload-error %ls %lu %ls", path, (unsigned long)code, message(code));
            return 2;
        }
        out(L"preload %lx %ls", flags, path);
        line = next;
    }
    free(data);
    return 0;
}

int wmain(int argc, wchar_t **argv)
{
    if (argc < 4) {
        out(L"usage-error harness.exe PRELOADS_FILE CONSUMER_DLL INIT_SYMBOL [DEP_NAME...]");
        return 1;
    }
    int rc = replay_preloads(argv[1]);
    if (rc) return rc;

    /* Python/dynload_win.c, _PyImport_FindSharedFuncptrWindows (3.8 and later). */
    UINT old_mode = SetErrorMode(SEM_FAILCRITICALERRORS);
    HMODULE ext = LoadLibraryExW(argv[2], NULL,
                                 LOAD_LIBRARY_SEARCH_DEFAULT_DIRS | LOAD_LIBRARY_SEARCH_DLL_LOAD_DIR);
    DWORD code = GetLastError();
    SetErrorMode(old_mode);
    if (!ext) {
        out(L"load-error %lu %ls", (unsigned long)code, message(code));
        return 3;
    }

    char symbol[512];
    WideCharToMultiByte(CP_UTF8, 0, argv[3], -1, symbol, (int)sizeof(symbol), NULL, NULL);
    int (*init)(void) = (int (*)(void))(void (*)(void))GetProcAddress(ext, symbol);
    if (!init) {
        code = GetLastError();
        out(L"symbol-error %ls %lu %ls", argv[3], (unsigned long)code, message(code));
        return 4;
    }
    out(L"init-result %d", init());

    for (int i = 4; i < argc; i++) {
        HMODULE dep = GetModuleHandleW(argv[i]);
        wchar_t file[32768];
        if (dep && GetModuleFileNameW(dep, file, 32768))
            out(L"dep %ls %ls", argv[i], file);
        else
            out(L"dep %ls not-loaded", argv[i]);
    }
    return 0;
}
