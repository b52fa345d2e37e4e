@echo off
rem dllreg pre-unlink hook for a conda package of a native library (Windows).
rem Ship it as Scripts\.<PKG_NAME>-pre-unlink.bat next to the post-link hook (see
rem hooks\README.md). conda runs it before removing the package's files, also on upgrade (the old
rem version's pre-unlink runs, then the new version's post-link), so the registry never points at
rem files that are gone. The registration is removed only if this package made it (--owner).
setlocal

rem ---- packager: edit these two lines (the same values as in post-link.bat) ----------------
set "DLLREG_NAME=foo"
set "DLLREG_FILES=Library\bin\foo.dll"
rem --------------------------------------------------------------------------------------------

set "PY=%PREFIX%\python.exe"
rem Without dllreg in the prefix there is no registry to remove from: say so, never fail.
if not exist "%PY%" goto nodllreg
"%PY%" -I -c "import dllreg" >nul 2>&1
if errorlevel 1 goto nodllreg
"%PY%" -I -m dllreg unregister --name "%DLLREG_NAME%" --provider conda --owner "%PKG_NAME%"
exit /b %errorlevel%

:nodllreg
>>"%PREFIX%\.messages.txt" echo dllreg: %PKG_NAME% %PKG_VERSION% (build %PKG_BUILDNUM%) did not unregister library %DLLREG_NAME% (%DLLREG_FILES%): %PY% is missing or has no dllreg
exit /b 0
