/* AMX helpers shared by the kernels in this folder (included, so each source stays one translation unit;
 * kernels/model/c_library.py hashes this header into every build). */
#ifndef HEARTH_AMX_TILES_H
#define HEARTH_AMX_TILES_H

#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

/* Asks Linux for the tile state (oneDNN asks for it too; granting it twice is harmless); whether granted. */
static inline int request_tile_state(void) {
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

/* The 64-byte operand of _tile_loadconfig (palette 1): each tile's rows and bytes per row. */
struct tile_config {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

#endif
