/*
 * A stand-in for Windows' bcryptprimitives.dll under Wine 8, which lacks ProcessPrng.
 * Rust's standard library (1.78 and later) imports ProcessPrng for its random numbers, so
 * without it no Rust program starts under Wine. This fills the buffer from RtlGenRandom
 * (advapi32's SystemFunction036), which Wine has. Built with mingw by scripts/windows-ci.sh
 * and copied into the Wine prefix; never shipped with cmem.
 */
#include <windows.h>
#define SystemFunction036 NTAPI SystemFunction036
#include <ntsecapi.h>
#undef SystemFunction036

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!RtlGenRandom(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
