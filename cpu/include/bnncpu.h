/*
 * bnncpu: FINN-exact inference of binarized neural networks on CPUs.
 *
 * The engine runs the network that `bnnflow compile` handed to FINN's HLS code
 * generation (the compile folder's model_hw.onnx: after folding and bit-width
 * minimisation), with the same binary weights, the same integer thresholds and
 * the same label select, so its classes and integer scores equal those of the
 * FPGA design bit for bit. This header is the whole public interface and the
 * definition of the model file format. C11, libc and pthreads only.
 *
 * ============================== Model file format ==============================
 *
 * A model file (written by `bnnflow compile` as <compile dir>/model.bnn, or by
 * `bnnflow cpu export`) is little-endian throughout: a 64-byte file header,
 * then n_layers layer records, nothing after them.
 *
 * File header (offsets in bytes):
 *    0  u8[8]  magic       "BNNCPU\0\0"
 *    8  u16    version_major   BNN_FORMAT_MAJOR; a reader refuses any other major
 *   10  u16    version_minor   readers accept any minor <= their own
 *   12  u32    header_bytes    64
 *   16  u64    file_bytes      the size of the whole file
 *   24  u32    crc32           CRC-32 (zlib's polynomial, as Python's zlib.crc32)
 *                              of the whole file with these four bytes taken as zero
 *   28  u32    n_layers        1 .. BNN_MAX_LAYERS
 *   32  u32    in_c            the input image as the dataset stores it:
 *   36  u32    in_h              in_c planes of in_h x in_w uint8 pixels (CHW),
 *   40  u32    in_w              e.g. 1x28x28 MNIST, 3x32x32 CIFAR-10, 1x8x8 digits
 *   44  u32    input_order     how the first layer reads the image:
 *                                BNN_ORDER_CHW: in stored order (FINN's graph
 *                                  flattens the NCHW input, as TFC/SFC/LFC do)
 *                                BNN_ORDER_HWC: transposed to height, width,
 *                                  channel (FINN's NCHW->NHWC input Transpose, CNV)
 *   48  u32    n_classes       length of the score vector (the label select's input)
 *   52  u32    dataset         BNN_DATASET_*: which dataset the model was compiled for
 *   56  u32    flags           0
 *   60  u32    reserved        0
 *
 * Layer record: a 64-byte layer header, then the payload, then zero bytes up to
 * record_bytes (a multiple of 8).
 *    0  u32    kind            BNN_LAYER_*
 *    4  u32    record_bytes    64 + payload, rounded up to a multiple of 8
 *    8  u32    in_h, in_w, in_c      the layer's input, height x width x channels
 *   20  u32    out_h, out_w, out_c   its output
 *   32  u32    kernel          window height kh; 1 for fully-connected layers
 *   36  u32    stride          window stride down the rows sh; 1 for fully-connected layers
 *   40  u32    input_type      BNN_TYPE_*
 *   44  u32    output_type     BNN_TYPE_*
 *   48  u32    n_thresholds    thresholds per output channel
 *   52  i32    act_val         THRESHOLD only: added to the count (FINN's ActVal); else 0
 *   56  u16    kernel_w        window width kw (format 1.1; 0 in 1.0 files: kw = kh)
 *   58  u16    stride_w        stride along a row sw (format 1.1; 0 in 1.0 files: sw = sh)
 *   60  u8[4]  pad             MVAU only: pad_top, pad_left, pad_bottom, pad_right
 *                              (format 1.1; 0 in 1.0 files)
 *
 * In a 1.1 file kernel_w and stride_w are 1 .. BNN_MAX_DIM on every layer (1
 * on THRESHOLD and LABEL_SELECT) and pad is zero on every layer but an MVAU.
 * A 1.0 file has zeros at 56..63 (its "reserved" words) and means square
 * windows and no padding; readers of 1.1 load it unchanged.
 *
 * Tensors between layers are height x width x channels with the channel
 * fastest (FINN's NHWC stream order); a fully-connected layer sees 1 x 1 x C.
 * A window is kh x kw pixels, moved sh rows and sw columns at a time over the
 * input padded by pad_top rows above, pad_bottom below, pad_left columns on
 * the left and pad_right on the right:
 *   out_h = (in_h + pad_top + pad_bottom - kh) / sh + 1   (integer division)
 *   out_w = (in_w + pad_left + pad_right - kw) / sw + 1
 * with every pad < the window's side in its direction. A padded pixel holds,
 * in every channel, the value 0 of the input's type, as FINN's FMPadding
 * (np.pad with a constant 0 on the integer stream): a 0 bit for a bits input,
 * which is the weight-mismatching -1 of the XNOR product (not a neutral
 * value), and the integer 0 for a uint8 or int8 input.
 *
 * Layer kinds:
 *
 * BNN_LAYER_THRESHOLD (FINN Thresholding on the uint8 input)
 *   input BNN_TYPE_UINT8; output BNN_TYPE_BITS or BNN_TYPE_INT8; out shape == in
 *   shape; kernel == stride == 1; 1 <= n_thresholds <= 255.
 *   payload: int32 threshold[in_c][n_thresholds]
 *   out[h][w][c] = act_val + the number of i with x[h][w][c] >= threshold[c][i]
 *   Every possible output must fit the output type: 0 <= act_val and
 *   act_val + n_thresholds <= 1 for bits, -128 <= act_val and
 *   act_val + n_thresholds <= 127 for int8. (TFC: one threshold, 128, per pixel;
 *   CNV: 255 thresholds 1..255 and act_val -128, i.e. x - 128 as int8.)
 *
 * BNN_LAYER_MVAU (FINN ConvolutionInputGenerator + MVAU, or a lone MVAU)
 *   input BNN_TYPE_BITS (binaryXnorMode), or BNN_TYPE_UINT8 / BNN_TYPE_INT8 (an
 *   integer first layer: CNV's conv1); output BNN_TYPE_BITS (n_thresholds == 1)
 *   or BNN_TYPE_INT32 scores (n_thresholds == 0).
 *   K = kh * kw * in_c inputs per output, in window order
 *   (kernel row, kernel column, channel), the channel fastest: the order of
 *   FINN's im2col and of the rows of MVAU's weight matrix.
 *   payload: out_c weight rows of ceil(K / 64) u64 words each; bit j of word i
 *            of row n is weight (64 i + j, n) of the MVAU matrix, 1 for +1 and
 *            0 for -1 (FINN's BINARY encoding); bits past K are zero.
 *            Then, if n_thresholds == 1, int32 threshold[out_c].
 *   The accumulator is FINN's:
 *     bits input:    acc = the number of window positions where the input bit
 *                    equals the weight bit (XNOR and popcount; 0 .. K; the +-1
 *                    dot product is 2 acc - K)
 *     integer input: acc = sum over the window of x * w, w in {-1, +1}
 *   out = acc >= threshold[n] (bits), or acc itself (int32 scores).
 *
 * BNN_LAYER_MAXPOOL (FINN's max-pooling: a depthwise sliding window + Pool)
 *   bits in, bits out, out_c == in_c, no padding: out = OR over the kh x kw
 *   window (the max of {0, 1}). no payload.
 *
 * BNN_LAYER_LABEL_SELECT (FINN LabelSelect, top-1)
 *   int32 scores in (1 x 1 x n_classes), BNN_TYPE_CLASS out (1 x 1 x 1).
 *   no payload. The class is the lowest index holding the largest score, as
 *   finn-hlslib's LabelSelect_Batch scans upward with a strict > (and as ONNX
 *   TopK, FINN's Python execution, orders ties).
 *
 * A model is THRESHOLD? MVAU (MVAU | MAXPOOL)* LABEL_SELECT: shapes and types
 * chain from the image (uint8, in_h x in_w x in_c after input_order, or 1 x 1 x
 * in_c*in_h*in_w when the first layer reads it flat) to the last layer, each
 * layer's input_type being the output_type of the one before; every MVAU but
 * the last outputs bits, the last MVAU outputs n_classes int32 scores and the
 * label select makes the class. A flatten followed by a fully-connected layer
 * (CNV's 3x3x256 -> 256 after conv6 is a 3x3 window; a LeNet-style 5x5xC ->
 * N, where FINN's RemoveCNVtoFCFlatten permutes the weight rows from the
 * flattened CHW order to HWC) is an MVAU whose kh x kw window covers its whole
 * input: HWC order is the flattened order.
 * With input_order CHW the first layer reads the image flat (1 x 1 x
 * in_c*in_h*in_w) or has a single channel (in_h x in_w x 1, the same bytes):
 * a multi-channel spatial first layer has no stored-order meaning and is
 * refused.
 * The reader checks all of this, every size and the checksum before it
 * allocates anything for the layers. It also refuses nonzero flags, reserved
 * fields or record padding, and weight bits set past K (BNN_ERR_VERSION for
 * the file header's, BNN_ERR_SHAPE for a layer's), so every accepted file is
 * canonical; and, with BNN_ERR_TOO_LARGE, models whose engine layout would
 * pass the engine's own limits (1 GiB of weights, 256 MiB per tensor).
 * Messages name the layer as "layer i/n (KIND)", counted from 1.
 */
#ifndef BNNCPU_H
#define BNNCPU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with -fvisibility=hidden: the functions marked here are
 * its whole ABI, and `make check` fails if the shared library exports any
 * other symbol (the kernels and the reader's helpers stay internal). */
#if defined(__GNUC__) || defined(__clang__)
#define BNN_API __attribute__((visibility("default")))
#else
#define BNN_API
#endif

#define BNN_FORMAT_MAJOR 1
#define BNN_FORMAT_MINOR 1
#define BNN_MAGIC "BNNCPU\0\0"
#define BNN_HEADER_BYTES 64u
#define BNN_LAYER_HEADER_BYTES 64u
#define BNN_MAX_LAYERS 64u
#define BNN_MAX_DIM 4096u            /* any height, width or channel count */
#define BNN_MAX_K (1u << 20)          /* inputs per output of an MVAU */
#define BNN_MAX_FILE_BYTES (1ull << 31)

enum bnn_layer_kind {
    BNN_LAYER_THRESHOLD = 1,
    BNN_LAYER_MVAU = 2,
    BNN_LAYER_MAXPOOL = 3,
    BNN_LAYER_LABEL_SELECT = 4,
};

enum bnn_type {
    BNN_TYPE_BITS = 0,  /* {0, 1}, packed 64 to a word in the engine */
    BNN_TYPE_UINT8 = 1,
    BNN_TYPE_INT8 = 2,
    BNN_TYPE_INT32 = 3,
    BNN_TYPE_CLASS = 4,
};
enum bnn_order { BNN_ORDER_CHW = 0, BNN_ORDER_HWC = 1 };
enum bnn_dataset { BNN_DATASET_NONE = 0, BNN_DATASET_MNIST = 1, BNN_DATASET_CIFAR10 = 2, BNN_DATASET_DIGITS = 3 };

/* Status codes: 0 is success, every failure is negative. */
enum bnn_status {
    BNN_OK = 0,
    BNN_ERR_IO = -1,        /* cannot open or read the file */
    BNN_ERR_TRUNCATED = -2, /* shorter than its header says, or a record runs past the end */
    BNN_ERR_TOO_LARGE = -3, /* longer than its header says, or past a BNN_MAX_* limit */
    BNN_ERR_MAGIC = -4,     /* not a bnncpu model file */
    BNN_ERR_VERSION = -5,   /* a format version this reader does not know */
    BNN_ERR_CHECKSUM = -6,  /* CRC-32 mismatch */
    BNN_ERR_SHAPE = -7,     /* shapes or types that do not chain, bad kernel/stride */
    BNN_ERR_KIND = -8,      /* a layer kind this reader does not know */
    BNN_ERR_NOMEM = -9,     /* out of memory */
    BNN_ERR_ARG = -10,      /* a bad argument to a function */
    BNN_ERR_THREAD = -11,   /* a worker thread could not be started */
    BNN_ERR_BUSY = -12,     /* the context is running a batch for another thread */
};

/* A short English description of a status code ("checksum mismatch"). */
BNN_API const char *bnn_strerror(int status);

typedef struct bnn_model bnn_model;     /* immutable once loaded; share it between threads */
typedef struct bnn_context bnn_context; /* working buffers (and worker threads) for one model */

/* Load and validate a model. On failure *out is NULL, the status is returned and,
 * if err is not NULL, a one-line message naming the problem (and the layer) is
 * written to err (at most errlen bytes, NUL-terminated); bnn_model_load_file's
 * message starts with the path. The path must be a regular file (a FIFO, a
 * directory or a device is BNN_ERR_IO at once); its 64-byte header is checked
 * against the file's size before the rest, exactly the size it declares, is read. */
BNN_API int bnn_model_load_file(const char *path, bnn_model **out, char *err, size_t errlen);
BNN_API int bnn_model_load_memory(const void *data, size_t size, bnn_model **out, char *err, size_t errlen);
BNN_API void bnn_model_free(bnn_model *model);

typedef struct {
    uint32_t in_c, in_h, in_w;  /* one image: in_c * in_h * in_w uint8, CHW */
    uint32_t n_classes;
    uint32_t n_layers;
    uint32_t dataset;           /* enum bnn_dataset */
    uint64_t binary_macs;       /* per image: XNOR-popcount multiply-accumulates */
    uint64_t integer_macs;      /* per image: 8-bit x +-1 multiply-accumulates */
    uint64_t model_bytes;       /* memory the loaded model holds (weights in the engine's layout) */
    uint64_t context_bytes;     /* working buffers of one context */
} bnn_model_info;

BNN_API void bnn_model_get_info(const bnn_model *model, bnn_model_info *info);

/* One layer as the file describes it, plus what it costs per image. */
typedef struct {
    uint32_t kind;              /* enum bnn_layer_kind */
    uint32_t in_h, in_w, in_c, out_h, out_w, out_c, kernel, stride; /* window height, row step */
    uint32_t input_type, output_type, n_thresholds;
    int32_t act_val;
    uint64_t binary_macs, integer_macs;
    uint64_t weight_bytes;      /* the record's payload: weights and thresholds as stored */
    /* The window of an MVAU or MAXPOOL: kernel (rows) x kernel_w (columns) pixels,
     * moved stride rows and stride_w columns at a time, over the input padded by
     * pad[] = {top, left, bottom, right} pixels; 1, 1, 1, 1 and no padding for the
     * other kinds. */
    uint32_t kernel_w, stride_w;
    uint32_t pad[4];
} bnn_layer_info;

/* Layer index (0 .. n_layers - 1); BNN_ERR_ARG past the end. */
BNN_API int bnn_model_get_layer(const bnn_model *model, uint32_t index, bnn_layer_info *info);
BNN_API const char *bnn_layer_kind_name(uint32_t kind); /* "MVAU" */
BNN_API const char *bnn_type_name(uint32_t type);       /* "bits", "int8", ... */

/* Working buffers for one model; NULL when out of memory. A context runs one
 * batch at a time: a call that enters it while another thread's call is
 * running returns BNN_ERR_BUSY (use one context per thread). bnn_context_free
 * joins the context's worker threads. */
BNN_API bnn_context *bnn_context_new(const bnn_model *model);
BNN_API void bnn_context_free(bnn_context *ctx);

/* Run n images (n * in_c * in_h * in_w uint8, CHW, back to back) on the calling
 * thread. classes[n] receives the class indices; scores, if not NULL,
 * n * n_classes int32 (the last MVAU's accumulators). */
BNN_API int bnn_context_run(bnn_context *ctx, const uint8_t *images, size_t n, int32_t *classes, int32_t *scores);

/* bnn_context_run that also adds the nanoseconds spent in each layer to
 * layer_ns[n_layers] (which the caller zeroes): for profiling, not for speed. */
BNN_API int bnn_context_run_timed(bnn_context *ctx, const uint8_t *images, size_t n, int32_t *classes,
                                  int32_t *scores, uint64_t *layer_ns);

/* bnn_context_run with the batch split over at most n_threads threads, the
 * calling thread included (0: the online cores). The context starts its
 * worker threads, each with its own buffers, on the first batch it splits and
 * keeps them until bnn_context_free: no call after that starts a thread. A
 * batch is split only where each thread gets enough work to repay waking it
 * (the context times its runs to judge), so a small batch stays on the calling
 * thread. Results do not depend on n_threads. */
BNN_API int bnn_context_run_threads(bnn_context *ctx, const uint8_t *images, size_t n, int32_t *classes,
                                    int32_t *scores, int n_threads);

/* bnn_context_run_threads on a context made and freed inside: for one batch;
 * repeated calls should keep a context (this one starts its threads each time). */
BNN_API int bnn_run(const bnn_model *model, const uint8_t *images, size_t n, int32_t *classes, int32_t *scores,
                    int n_threads);

/* Worker threads the library has started in this process (for tests: a
 * context's calls after its first split must not add any). */
BNN_API unsigned bnn_threads_started(void);

/* CPU features, detected once. BNNCPU_DISABLE (comma-separated names, or "all")
 * switches features off before the kernels are chosen, so every kernel can be
 * tested on one machine: e.g. BNNCPU_DISABLE=avx2 runs the scalar popcount path.
 * Names: avx512, avx2, popcnt, neon, all. */
enum bnn_cpu_feature {
    BNN_CPU_POPCNT = 1u << 0, /* x86 POPCNT */
    BNN_CPU_AVX2 = 1u << 1,   /* x86 AVX2 */
    BNN_CPU_NEON = 1u << 2,   /* ARMv7 NEON or AArch64 ASIMD */
    BNN_CPU_AVX512 = 1u << 3, /* x86 AVX-512 F, BW and VPOPCNTDQ (Ice Lake, Zen 4 and later) */
};
BNN_API unsigned bnn_cpu_features(void);
/* The kernel set in use: "scalar", "popcnt", "avx2", "avx512", "neon". */
BNN_API const char *bnn_kernel_name(void);

BNN_API const char *bnn_version(void);

#ifdef __cplusplus
}
#endif
#endif /* BNNCPU_H */
