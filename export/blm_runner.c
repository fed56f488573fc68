/* On-board runner of a blmkd C export (``blmkd export --c --runner``): classifies a push-broom stream.
 *
 * This text follows the model (its weights and kernel) and the fitted byte quantization in one C file,
 * so that nothing else is needed to build it:
 *
 *     cc -O3 -o blm_runner blm_t_runner.c -lm
 *
 * It reads a raw cube (a file, or - for stdin) one line at a time as a push-broom sensor delivers it,
 * and writes the class map, one map line per input line, each line as soon as it is known:
 *
 *     blm_runner --width 145 --interleave bil --dtype uint16 scene.bil -o map.raw
 *     sensor_reader | blm_runner --hdr scene.hdr - > map.raw
 *
 * Input: BIL or BIP (streamable), BSQ (a seekable file with a known line count only), uint8, uint16,
 * int16 or float32, little- or big-endian, from flags or an ENVI header (--hdr, or <input>.hdr /
 * <input without its suffix>.hdr found beside a file). Output: W class ids per line (the original
 * ground-truth ids, as `blmkd predict` writes them to .npy), uint8 where every id < 256, else uint16
 * (host byte order); --index writes the class indices (uint8) instead.
 *
 * How a line is classified: each raw pixel is quantized to the model's bytes with the fitted per-band
 * range, exactly as blmkd's Preprocessing.to_bytes (float32 (x - lo)·gain, clipped to [0, 255], rounded
 * half to even); blm_pixels turns the line into per-pixel features, which go into a ring buffer of
 * BLM_P lines; the windows of the line BLM_P/2 lines back are gathered from the ring in scan order
 * and classified by blm_tokens. Output line y is written once input line y + P/2 has arrived (P/2 lines
 * of delay). Borders are reflected without repeating the edge pixel (numpy's "reflect"), as
 * `blmkd predict` does: columns at both sides; rows at the top (line -i is line i); at the bottom, the
 * end of the input is the end of the scene: after the last line (end of file, end of the pipe, or
 * --lines), the last P/2 map lines are written with rows H-1+i read as H-1-i, all of them still in the
 * ring. A stream of unknown length thus ends with P/2 lines that wait for its end. The map equals
 * `blmkd predict`'s map of the same scene with the same export.
 *
 * Memory: the ring, P·W·(BLM_D + 2·BLM_DI) floats, one raw and one byte line, and the windows of one
 * batch; nothing grows with the number of lines.
 *
 * Errors (unknown flag, band count or dtype the model cannot take, a short file, a line cut off by
 * the end of the input) print one line on stderr and exit with status 2 (usage) or 1 (data).
 */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLMR_BATCH 64 /* windows per blm_tokens call */

typedef struct {
    const char *input, *output, *hdr;
    long width, lines, bands, offset;
    int dtype;      /* bytes per value: 1 uint8, 2 uint16 / int16, 4 float32; with is_signed / is_float */
    int is_signed, is_float, big_endian, index_out;
    char interleave[8];
} blmr_opts;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3), noreturn))
#endif
static void blmr_die(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "blm_runner: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(status);
}

static int blmr_set_dtype(blmr_opts *o, const char *name) {
    if (!strcmp(name, "uint8")) { o->dtype = 1; o->is_signed = 0; o->is_float = 0; }
    else if (!strcmp(name, "uint16")) { o->dtype = 2; o->is_signed = 0; o->is_float = 0; }
    else if (!strcmp(name, "int16")) { o->dtype = 2; o->is_signed = 1; o->is_float = 0; }
    else if (!strcmp(name, "float32")) { o->dtype = 4; o->is_signed = 0; o->is_float = 1; }
    else return 0;
    return 1;
}

/* ---- ENVI header: samples, lines, bands, header offset, data type, interleave, byte order ---- */

static void blmr_read_hdr(blmr_opts *o, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) blmr_die(2, "cannot open header %s", path);
    char line[4096];
    if (!fgets(line, sizeof line, f) || strncmp(line, "ENVI", 4) != 0)
        blmr_die(1, "%s is not an ENVI header (its first line is not ENVI)", path);
    while (fgets(line, sizeof line, f)) {
        char *eq = strchr(line, '=');
        if (!eq) continue;
        *eq = 0;
        char *key = line, *val = eq + 1;
        while (*key == ' ' || *key == '\t') key++;
        for (char *e = key + strlen(key); e > key && (e[-1] == ' ' || e[-1] == '\t'); ) *--e = 0;
        while (*val == ' ' || *val == '\t') val++;
        if (*val == '{') { /* a list value, perhaps over several lines: skip it */
            while (!strchr(val, '}') && fgets(line, sizeof line, f)) val = line;
            continue;
        }
        for (char *e = val + strlen(val); e > val && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' '); ) *--e = 0;
        if (!strcmp(key, "samples")) o->width = atol(val);
        else if (!strcmp(key, "lines")) o->lines = atol(val);
        else if (!strcmp(key, "bands")) o->bands = atol(val);
        else if (!strcmp(key, "header offset")) o->offset = atol(val);
        else if (!strcmp(key, "byte order")) o->big_endian = atoi(val) == 1;
        else if (!strcmp(key, "interleave")) {
            snprintf(o->interleave, sizeof o->interleave, "%s", val);
            for (char *p = o->interleave; *p; p++) *p = (char)(*p | 0x20);
        } else if (!strcmp(key, "data type")) {
            const int t = atoi(val);
            const char *name = t == 1 ? "uint8" : t == 2 ? "int16" : t == 12 ? "uint16" : t == 4 ? "float32" : 0;
            if (!name || !blmr_set_dtype(o, name))
                blmr_die(1, "%s: ENVI data type %d is not supported (uint8 = 1, int16 = 2, uint16 = 12, float32 = 4)",
                         path, t);
        }
    }
    fclose(f);
}

static const char *blmr_hdr_beside(const char *input) {
    static char buf[4096];
    if (!input || !strcmp(input, "-") || strlen(input) + 5 > sizeof buf) return 0;
    FILE *f;
    snprintf(buf, sizeof buf, "%s.hdr", input);
    if ((f = fopen(buf, "r"))) { fclose(f); return buf; }
    snprintf(buf, sizeof buf, "%s", input);
    char *dot = strrchr(buf, '.'), *slash = strrchr(buf, '/');
    if (dot && (!slash || dot > slash)) {
        strcpy(dot, ".hdr");
        if ((f = fopen(buf, "r"))) { fclose(f); return buf; }
    }
    return 0;
}

static void blmr_usage(void) {
    fprintf(stderr,
            "usage: blm_runner [--hdr FILE] [--width W] [--bands B] [--lines H] [--interleave bil|bip|bsq]\n"
            "                  [--dtype uint8|uint16|int16|float32] [--offset BYTES] [--big-endian] [--index]\n"
            "                  [-o MAP] INPUT|-\n"
            "Classifies a raw hyperspectral cube line by line with the model built in (%d bands, %dx%d windows,\n"
            "%d classes); writes W class ids per input line, %d lines behind the input.\n",
            BLM_BANDS, BLM_P, BLM_P, BLM_CLASSES, BLM_P / 2);
}

static long blmr_long(const char *flag, const char *v) {
    char *end;
    errno = 0;
    const long x = strtol(v ? v : "", &end, 10);
    if (!v || *end || errno || x < 0) blmr_die(2, "%s needs a non-negative integer, got '%s'", flag, v ? v : "");
    return x;
}

static void blmr_parse(int argc, char **argv, blmr_opts *o) {
    memset(o, 0, sizeof *o);
    o->width = o->lines = o->bands = -1;
    o->offset = -1;
    o->big_endian = -1;
    const char *dtype = 0, *interleave = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { blmr_usage(); exit(0); }
        else if (!strcmp(a, "--hdr")) { o->hdr = v; i++; }
        else if (!strcmp(a, "--width")) { o->width = blmr_long(a, v); i++; }
        else if (!strcmp(a, "--lines")) { o->lines = blmr_long(a, v); i++; }
        else if (!strcmp(a, "--bands")) { o->bands = blmr_long(a, v); i++; }
        else if (!strcmp(a, "--offset")) { o->offset = blmr_long(a, v); i++; }
        else if (!strcmp(a, "--dtype")) { dtype = v ? v : ""; i++; }
        else if (!strcmp(a, "--interleave")) { interleave = v ? v : ""; i++; }
        else if (!strcmp(a, "--big-endian")) o->big_endian = 1;
        else if (!strcmp(a, "--index")) o->index_out = 1;
        else if (!strcmp(a, "-o") || !strcmp(a, "--out")) { o->output = v; i++; }
        else if (a[0] == '-' && a[1]) blmr_die(2, "unknown option %s (see --help)", a);
        else if (o->input) blmr_die(2, "one input only (got %s after %s)", a, o->input);
        else o->input = a;
        if (i >= argc) blmr_die(2, "%s needs a value", a);
    }
    if (!o->input) blmr_die(2, "no input (a raw cube file, or - for stdin; see --help)");
    /* the header first, then the flags override it */
    blmr_opts h;
    memset(&h, 0, sizeof h);
    h.width = h.lines = h.bands = -1;
    const char *hdr = o->hdr ? o->hdr : blmr_hdr_beside(o->input);
    if (hdr) blmr_read_hdr(&h, hdr);
    if (o->width < 0) o->width = h.width;
    if (o->lines < 0) o->lines = h.lines;
    if (o->bands < 0) o->bands = h.bands;
    if (o->offset < 0) o->offset = hdr ? h.offset : 0;
    if (o->big_endian < 0) o->big_endian = hdr ? h.big_endian : 0;
    if (dtype) {
        if (!blmr_set_dtype(o, dtype))
            blmr_die(2, "--dtype %s is not supported (uint8, uint16, int16, float32)", dtype);
    } else if (h.dtype) {
        o->dtype = h.dtype; o->is_signed = h.is_signed; o->is_float = h.is_float;
    }
    snprintf(o->interleave, sizeof o->interleave, "%s", interleave ? interleave : h.interleave);
    if (!o->dtype) blmr_die(2, "no data type: pass --dtype uint8|uint16|int16|float32 or an ENVI header");
    if (strcmp(o->interleave, "bil") && strcmp(o->interleave, "bip") && strcmp(o->interleave, "bsq"))
        blmr_die(2, "interleave '%s' is not bil, bip or bsq (--interleave or the ENVI header)", o->interleave);
    if (o->width <= 0) blmr_die(2, "no line width: pass --width or an ENVI header with samples");
    if (o->bands < 0) o->bands = BLM_BANDS;
    if (o->bands != BLM_BANDS)
        blmr_die(1, "the input has %ld bands; this model takes %d", o->bands, BLM_BANDS);
    if (o->width < BLM_P)
        blmr_die(1, "lines of %ld pixels are narrower than the model's %d-pixel window", o->width, BLM_P);
}

/* ---- input: one raw line at a time, as (W, bands) bytes ---- */

static float blmr_value(const unsigned char *p, const blmr_opts *o) {
    unsigned char b[4];
    for (int i = 0; i < o->dtype; i++) b[i] = o->big_endian ? p[o->dtype - 1 - i] : p[i];
    if (o->dtype == 1) return (float)b[0];
    if (o->dtype == 2) {
        const unsigned v = (unsigned)b[0] | (unsigned)b[1] << 8;
        return o->is_signed ? (float)(int)(v >= 32768u ? (int)v - 65536 : (int)v) : (float)v;
    }
    const uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Preprocessing.to_bytes: round(clip((x - lo)·gain, 0, 255)) in float32, half to even (the 1.5·2^23
 * trick, exact below 2^22 in the default rounding mode); NaN becomes 0. */
static uint8_t blmr_quantize(float x, int band) {
    float y = (x - blm_q_lo[band]) * blm_q_gain[band];
    y = y > 0.0f ? y : 0.0f; /* also NaN → 0 */
    y = y < 255.0f ? y : 255.0f;
    y = (y + 12582912.0f) - 12582912.0f;
    return (uint8_t)y;
}

/* Read input line `y` into px (W, bands) bytes. Returns 1, or 0 at a clean end of the input. */
static int blmr_read_line(FILE *in, const blmr_opts *o, long y, unsigned char *raw, uint8_t *px) {
    const long W = o->width, B = o->bands;
    const size_t line_bytes = (size_t)W * (size_t)B * (size_t)o->dtype;
    if (!strcmp(o->interleave, "bsq")) { /* band b of line y is at ((b·H + y)·W) values */
        for (long b = 0; b < B; b++) {
            const long off = o->offset + ((b * o->lines + y) * W) * o->dtype;
            if (fseek(in, off, SEEK_SET) != 0) blmr_die(1, "cannot seek in %s (BSQ needs a file)", o->input);
            const size_t got = fread(raw + (size_t)b * W * o->dtype, 1, (size_t)W * o->dtype, in);
            if (got != (size_t)W * o->dtype)
                blmr_die(1, "%s is short: band %ld of line %ld is cut off (BSQ, --lines and the file size disagree)",
                         o->input, b, y);
        }
    } else {
        const size_t got = fread(raw, 1, line_bytes, in);
        if (got == 0 && feof(in)) return 0;
        if (got != line_bytes)
            blmr_die(1, "%s is short: line %ld has %ld bytes, not a whole line (check --width, --bands and --dtype)",
                     !strcmp(o->input, "-") ? "the input" : o->input, y, (long)got);
    }
    const int bil = !strcmp(o->interleave, "bil") || !strcmp(o->interleave, "bsq"); /* bsq lines read as bil */
    for (long c = 0; c < W; c++)
        for (long b = 0; b < B; b++) {
            const size_t k = bil ? (size_t)b * W + c : (size_t)c * B + b;
            px[(size_t)c * B + b] = blmr_quantize(blmr_value(raw + k * o->dtype, o), (int)b);
        }
    return 1;
}

/* ---- the ring of per-pixel features and the windows ---- */

typedef struct {
    long W;
    float *h, *x, *z;         /* [P][W][D], [P][W][DI] × 2: line y in slot y % P */
    float *hb, *xb, *zb;      /* one batch of windows, [BATCH][L][·] */
    uint16_t *ids;            /* one map line */
} blmr_ring;

static long blmr_reflect(long i, long n) { /* numpy "reflect", overhang < n */
    if (i < 0) i = -i;
    if (i > n - 1) i = 2 * (n - 1) - i;
    return i;
}

/* Map line y of a scene whose lines 0..last are known (last = H - 1 once the input has ended, then
 * rows beyond it reflect back; before that, y + P/2 <= last and no row beyond last is read). */
static void blmr_classify_line(blmr_ring *r, long y, long height) {
    const long W = r->W, R = BLM_P / 2;
    long row[BLM_P], col[BLM_P];
    for (int j = 0; j < BLM_P; j++) row[j] = blmr_reflect(y - R + j, height) % BLM_P; /* ring slot */
    float logits[BLMR_BATCH * BLM_CLASSES];
    for (long c0 = 0; c0 < W; c0 += BLMR_BATCH) {
        const int n = (int)(W - c0 < BLMR_BATCH ? W - c0 : BLMR_BATCH);
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < BLM_P; j++) col[j] = blmr_reflect(c0 + i - R + j, W);
            for (int t = 0; t < BLM_L; t++) {
                const size_t q = (size_t)row[blm_order[t] / BLM_P] * W + col[blm_order[t] % BLM_P];
                const size_t o = (size_t)i * BLM_L + t;
                memcpy(r->hb + o * BLM_D, r->h + q * BLM_D, BLM_D * sizeof(float));
                memcpy(r->xb + o * BLM_DI, r->x + q * BLM_DI, BLM_DI * sizeof(float));
                memcpy(r->zb + o * BLM_DI, r->z + q * BLM_DI, BLM_DI * sizeof(float));
            }
        }
        blm_tokens(r->hb, r->xb, r->zb, n, logits);
        for (int i = 0; i < n; i++) {
            const float *l = logits + (size_t)i * BLM_CLASSES;
            int best = 0;
            for (int k = 1; k < BLM_CLASSES; k++) best = l[k] > l[best] ? k : best; /* first maximum, as argmax */
            r->ids[c0 + i] = (uint16_t)best;
        }
    }
}

static void blmr_write_line(FILE *out, const blmr_ring *r, int index_out) {
    const long W = r->W;
    int wide = 0;
    if (!index_out)
        for (int k = 0; k < BLM_CLASSES; k++) wide |= blm_class_ids[k] > 255;
    unsigned char buf[2 * 4096];
    for (long c0 = 0; c0 < W; c0 += 4096) {
        const long n = W - c0 < 4096 ? W - c0 : 4096;
        for (long i = 0; i < n; i++) {
            const unsigned v = index_out ? r->ids[c0 + i] : (unsigned)blm_class_ids[r->ids[c0 + i]];
            if (wide) memcpy(buf + 2 * i, &(uint16_t){(uint16_t)v}, 2);
            else buf[i] = (unsigned char)v;
        }
        if (fwrite(buf, wide ? 2 : 1, (size_t)n, out) != (size_t)n) blmr_die(1, "cannot write the map");
    }
    fflush(out);
}

int main(int argc, char **argv) {
    blmr_opts o;
    blmr_parse(argc, argv, &o);
    const int stream = !strcmp(o.input, "-");
    FILE *in = stream ? stdin : fopen(o.input, "rb");
    if (!in) blmr_die(1, "cannot open %s: %s", o.input, strerror(errno));
    const long W = o.width, B = o.bands;
    const size_t line_bytes = (size_t)W * B * o.dtype;
    if (!strcmp(o.interleave, "bsq") && (stream || o.lines <= 0))
        blmr_die(2, "BSQ needs a file and its line count (--lines or the ENVI header); streams must be BIL or BIP");
    if (!stream) { /* a file: its size must be whole lines of this width, band count and dtype */
        if (fseek(in, 0, SEEK_END) != 0) blmr_die(1, "cannot seek in %s", o.input);
        const long size = ftell(in) - o.offset;
        if (size < 0 || size % (long)line_bytes != 0)
            blmr_die(1, "%s: %ld data bytes are not whole lines of %ld bytes (width x bands x dtype size): "
                     "wrong --width, --bands or --dtype, or a short file", o.input, size, (long)line_bytes);
        if (o.lines >= 0 && size / (long)line_bytes != o.lines)
            blmr_die(1, "%s is short: it holds %ld lines, the header or --lines says %ld", o.input,
                     size / (long)line_bytes, o.lines);
        if (o.lines < 0) o.lines = size / (long)line_bytes;
        fseek(in, o.offset, SEEK_SET);
    } else {
        for (long i = 0; i < o.offset; i++)
            if (getc(in) == EOF) blmr_die(1, "the input ends inside its %ld-byte header", o.offset);
    }
    FILE *out = o.output && strcmp(o.output, "-") ? fopen(o.output, "wb") : stdout;
    if (!out) blmr_die(1, "cannot create %s: %s", o.output, strerror(errno));

    blmr_ring r;
    r.W = W;
    r.h = malloc(sizeof(float) * BLM_P * W * BLM_D);
    r.x = malloc(sizeof(float) * BLM_P * W * BLM_DI);
    r.z = malloc(sizeof(float) * BLM_P * W * BLM_DI);
    r.hb = malloc(sizeof(float) * BLMR_BATCH * BLM_L * BLM_D);
    r.xb = malloc(sizeof(float) * BLMR_BATCH * BLM_L * BLM_DI);
    r.zb = malloc(sizeof(float) * BLMR_BATCH * BLM_L * BLM_DI);
    r.ids = malloc(sizeof(uint16_t) * W);
    unsigned char *raw = malloc(line_bytes);
    uint8_t *px = malloc((size_t)W * B);
    if (!r.h || !r.x || !r.z || !r.hb || !r.xb || !r.zb || !r.ids || !raw || !px)
        blmr_die(1, "out of memory for lines of %ld pixels", W);

    const long R = BLM_P / 2;
    long y = 0, done = 0; /* lines read, map lines written */
    while (o.lines < 0 || y < o.lines) {
        if (!blmr_read_line(in, &o, y, raw, px)) break;
        const size_t slot = (size_t)(y % BLM_P) * W;
        blm_pixels(px, (int)W, r.h + slot * BLM_D, r.x + slot * BLM_DI, r.z + slot * BLM_DI);
        y++;
        if (y - 1 - R >= 0) { /* line y-1 completes the window of map line y-1-R */
            blmr_classify_line(&r, done, y); /* height y: rows read so far; none beyond is touched */
            blmr_write_line(out, &r, o.index_out);
            done++;
        }
    }
    if (y <= R) /* nothing written yet: the first map line needs line P/2 */
        blmr_die(1, "the input has %ld lines; the model's %d-line window needs at least %ld", y, BLM_P, R + 1);
    for (; done < y; done++) { /* the end of the input is the scene's bottom edge: reflect there */
        blmr_classify_line(&r, done, y);
        blmr_write_line(out, &r, o.index_out);
    }
    if (out != stdout && fclose(out) != 0) blmr_die(1, "cannot write %s", o.output);
    return 0;
}
