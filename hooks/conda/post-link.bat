@echo off
rem dllreg post-link hook for a conda package of a native library (Windows).
rem Ship it as Scripts\.<PKG_NAME>-post-link.bat (see hooks\README.md). conda runs it after
rem linking the package, with PREFIX, PKG_NAME, PKG_VERSION and PKG_BUILDNUM set; it registers
rem the package's DLLs in the dllreg registry of the prefix's Python, so that pip-installed
rem dllreg consumers load these files instead of bringing a second copy.
setlocal

rem ---- packager: edit these two lines -------------------------------------------------------
rem The dllreg library name consumers require (as in [tool.dllreg] requires = ["foo>=1.0"]).
set "DLLREG_NAME=foo"
rem The DLLs relative to PREFIX, space-separated, dependencies first (principal last).
rem No spaces or parentheses in these paths.
set "DLLREG_FILES=Library\bin\foo.dll"
rem --------------------------------------------------------------------------------------------

set "PY=%PREFIX%\python.exe"
rem dllreg is an optional guest in a conda prefix: without it there is no registry to write to,
rem which is not this package's fault, so the transaction must not fail. conda shows
rem %PREFIX%\.messages.txt to the user after the transaction.
if not exist "%PY%" goto nodllreg
"%PY%" -I -c "import dllreg" >nul 2>&1
if errorlevel 1 goto nodllreg

set "ARGS="
for %%F in (%DLLREG_FILES%) do call :addpath %%F
"%PY%" -I -m dllreg register --name "%DLLREG_NAME%" --version "%PKG_VERSION%" --provider conda --prefix "%PREFIX%" --owner "%PKG_NAME%" %ARGS%
exit /b %errorlevel%

:addpath
set ARGS=%ARGS% --path "%PREFIX%\%~1"
goto :eof

:nodllreg
set "CMD="%PY%" -m dllreg register --name %DLLREG_NAME% --version %PKG_VERSION% --provider conda --prefix "%PREFIX%" --owner %PKG_NAME%"
for %%F in (%DLLREG_FILES%) do call :addcmd %%F
>>"%PREFIX%\.messages.txt" echo dllreg: %PKG_NAME% %PKG_VERSION% (build %PKG_BUILDNUM%) did not register library %DLLREG_NAME%: %PY% is missing or has no dllreg; after installing dllreg run: %CMD%
exit /b 0

:addcmd
set CMD=%CMD% --path "%PREFIX%\%~1"
goto :eof
