/*
 * Running a loaded model: one context per thread holds every working buffer,
 * so bnn_context_run neither allocates nor locks (one atomic flag refuses a
 * second thread that enters the same context). bnn_context_run_threads splits
 * a batch over a pool of worker threads that the context starts once and
 * joins when it is freed: each worker has its own context, and every thread,
 * the caller included, takes chunks of consecutive images from one atomic
 * counter until none are left (images are independent, so the split cannot
 * change a result, and a worker that wakes late only does less of the work).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define BNN_MAX_THREADS 256
/* A batch is split only when each thread's share is estimated at this much
 * work or more: below it, waking a sleeping worker (a futex wake and a
 * reschedule, several microseconds, far more on a loaded machine) costs
 * about what it saves. */
#define BNN_SPLIT_MIN_NS 100000u
/* Chunks a thread takes at a time: about this long, so that the caller never
 * waits long for a worker's last chunk. */
#define BNN_CHUNK_NS 20000u

struct bnn_pool;

struct bnn_context {
    const bnn_model *model;
    atomic_int busy;       /* set while a thread runs on this context */
    struct bnn_pool *pool; /* worker threads, started by the first batch worth splitting */
    uint64_t ns_per_image; /* measured by bnn_context_run_threads; 0 until then */
    uint64_t split_min_ns; /* BNN_SPLIT_MIN_NS but in tests */
    uint8_t *act[2];   /* ping-pong activation buffers */
    uint8_t *image;    /* the image transposed to HWC, or copied, when the model wants that */
    int32_t *scores;   /* the last MVAU's accumulators, padded to whole blocks */
    uint8_t *split;    /* a layer input's nibble tables, for the split-weight kernels */
    uint8_t *padded;   /* a padded window's input with its border (bnn_pad_input) */
    void *mem;
};

static size_t align_up(size_t v)
{
    return (v + BNN_ALIGN - 1) / BNN_ALIGN * BNN_ALIGN;
}

#ifdef BNN_CONTRACTS
void bnn_contract_failed(const char *cond, const char *file, int line)
{
    fprintf(stderr, "bnncpu: contract violated at %s:%d: %s\n", file, line, cond);
    abort();
}

static int aligned(const void *p, size_t align)
{
    return (uintptr_t)p % align == 0;
}

void bnn_require_bgemm(const struct bnn_bgemm_job *j, size_t align)
{
    BNN_REQUIRE(j && j->in && j->weights && aligned(j->in, 8) && aligned(j->weights, align));
    BNN_REQUIRE(j->in_w > 0 && j->in_wpp > 0 && j->out_h > 0 && j->out_w > 0 && j->stride_h > 0 && j->stride_w > 0);
    BNN_REQUIRE(j->row_step == (size_t)j->stride_h * j->in_w * j->in_wpp && j->col_step == (size_t)j->stride_w * j->in_wpp);
    BNN_REQUIRE(j->n_blocks > 0 && j->n_rows > 0 && j->row_words > 0);
    /* Runs of one window do not overlap, and K counts window bits. */
    BNN_REQUIRE(j->n_rows == 1 || j->row_words <= j->row_stride);
    BNN_REQUIRE(j->k >= 0 && (uint64_t)j->k <= (uint64_t)j->n_rows * j->row_words * 64);
    /* The last output pixel's last run ends inside the input tensor. */
    const size_t last =
        ((size_t)(j->out_h - 1) * j->stride_h * j->in_w + (size_t)(j->out_w - 1) * j->stride_w) * j->in_wpp;
    BNN_REQUIRE(last + (size_t)(j->n_rows - 1) * j->row_stride + j->row_words <= j->in_words);
    if (!j->scores)
        BNN_REQUIRE(j->out && j->limit && j->n_blocks <= j->out_pixel_bytes);
    if (j->weights_split)
        BNN_REQUIRE(aligned(j->weights_split, align) && j->split && aligned(j->split, 32) &&
                    (uint64_t)j->n_rows * j->row_words <= BNN_NIB_MAX_WORDS);
}

void bnn_require_i8gemm(const struct bnn_i8gemm_job *j, size_t align)
{
    BNN_REQUIRE(j && j->in && j->weights && aligned(j->weights, align));
    BNN_REQUIRE(j->in_w > 0 && j->in_c > 0 && j->out_h > 0 && j->out_w > 0 && j->kernel > 0 && j->stride_h > 0 &&
                j->stride_w > 0);
    BNN_REQUIRE(j->row_step == (size_t)j->stride_h * j->in_w * j->in_c && j->col_step == (size_t)j->stride_w * j->in_c);
    BNN_REQUIRE(j->n_blocks > 0);
    /* A row's pairs cover its kernel_w * in_c bytes, with at most one pad byte. */
    const uint64_t run = (uint64_t)j->kernel_w * j->in_c;
    BNN_REQUIRE(2 * (uint64_t)j->run_pairs >= run && 2 * (uint64_t)j->run_pairs <= run + 1);
    if (j->scores)
        BNN_REQUIRE(j->offset != NULL);
    else
        BNN_REQUIRE(j->out && j->limit && 2 * (size_t)j->n_blocks <= j->out_pixel_bytes);
}

void bnn_require_threshold_bits(const uint8_t *x, const uint8_t *t, size_t n, const uint64_t *out)
{
    BNN_REQUIRE(x && t && out && n > 0 && aligned(out, 8));
}
#endif

bnn_context *bnn_context_new(const bnn_model *model)
{
    if (!model)
        return NULL;
    bnn_context *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return NULL;
    size_t act = model->act_bytes, image = align_up(model->image_bytes + BNN_SLACK);
    size_t scores = align_up(model->score_count * 4), split = model->split_bytes, pad = model->pad_bytes;
    uint8_t *mem = bnn_alloc(2 * act + image + scores + split + pad);
    if (!mem) {
        free(ctx);
        return NULL;
    }
    /* Zeroed once, so the slack after each tensor holds defined bytes. */
    memset(mem, 0, 2 * act + image + scores + split + pad);
    ctx->model = model;
    atomic_init(&ctx->busy, 0);
    ctx->split_min_ns = BNN_SPLIT_MIN_NS;
    ctx->mem = mem;
    ctx->act[0] = mem;
    ctx->act[1] = mem + act;
    ctx->image = mem + 2 * act;
    ctx->scores = (int32_t *)(void *)(ctx->image + image);
    ctx->split = ctx->image + image + scores;
    ctx->padded = ctx->image + image + scores + split;
    return ctx;
}

static void pool_free(struct bnn_pool *p);

void bnn_context_free(bnn_context *ctx)
{
    if (!ctx)
        return;
    pool_free(ctx->pool);
    bnn_free(ctx->mem);
    free(ctx);
}

static void transpose_chw_to_hwc(const uint8_t *src, uint8_t *dst, uint32_t c, uint32_t h, uint32_t w)
{
    const size_t plane = (size_t)h * w;
    for (uint32_t ch = 0; ch < c; ch++)
        for (size_t i = 0; i < plane; i++)
            dst[i * c + ch] = src[ch * plane + i];
}

/* in_bytes, out_bytes here and below: what the buffers hold, slack included. */
static void run_threshold(const struct bnn_kernels *kern, const struct bnn_layer *L, const uint8_t *x,
                          size_t in_bytes, uint8_t *out, size_t out_bytes)
{
    const size_t n_pix = (size_t)L->in_h * L->in_w, c = L->in_c;
    BNN_REQUIRE(n_pix * c <= in_bytes);
    BNN_REQUIRE(L->out_type == BNN_TYPE_BITS ? L->out_wpp == (c + 63) / 64 && n_pix * L->out_wpp * 8 <= out_bytes
                                             : n_pix * c <= out_bytes);
    if (L->out_type == BNN_TYPE_BITS) {
        uint64_t *o = (uint64_t *)(void *)out;
        for (size_t p = 0; p < n_pix; p++) {
            kern->threshold_bits(x + p * c, L->t8, c, o + p * L->out_wpp);
            if (L->has_never)
                for (uint32_t w = 0; w < L->out_wpp; w++)
                    o[p * L->out_wpp + w] &= ~L->never[w];
        }
    } else {
        for (size_t p = 0; p < n_pix; p++)
            for (size_t ch = 0; ch < c; ch++)
                out[p * c + ch] = L->lut[ch * 256 + x[p * c + ch]];
    }
}

/* Output bytes past the kernel's last block (up to the pixel's whole words)
 * must be zero: the next layer XORs them against zero pad weights. */
static void clear_pad_bytes(const struct bnn_layer *L, uint8_t *out, size_t written)
{
    const size_t pixel = (size_t)L->out_wpp * 8;
    if (written >= pixel)
        return;
    const size_t n_pix = (size_t)L->out_h * L->out_w;
    for (size_t p = 0; p < n_pix; p++)
        memset(out + p * pixel + written, 0, pixel - written);
}

static void run_mvau(const bnn_context *ctx, const struct bnn_layer *L, const void *in, size_t in_bytes, uint8_t *out,
                     size_t out_bytes)
{
    const bnn_model *m = ctx->model;
    const struct bnn_kernels *kern = m->kernels;
    int32_t *scores = ctx->scores;
    const int want_scores = L->out_type == BNN_TYPE_INT32;
    const size_t n_pix = (size_t)L->out_h * L->out_w;
    if (L->padded) {
        /* The window slides over a padded copy (internal.h), so the kernels
         * never meet a border. */
        BNN_REQUIRE(in_bytes >= (L->in_type == BNN_TYPE_BITS ? (size_t)L->in_wpp * 8 : L->in_c) * L->in_h * L->in_w);
        bnn_pad_input(L, in, ctx->padded);
        in = ctx->padded;
        in_bytes = m->pad_bytes;
    }
    if (L->in_type == BNN_TYPE_BITS) {
        struct bnn_bgemm_job j = {
            .in = in,
            .in_w = L->win_w,
            .in_wpp = L->in_wpp,
            .out_h = L->out_h,
            .out_w = L->out_w,
            .stride_h = L->stride,
            .stride_w = L->stride_w,
            .n_rows = L->n_rows,
            .row_words = L->row_words,
            .row_stride = (size_t)L->win_w * L->in_wpp,
            .weights = L->bw,
            .n_blocks = L->n_blocks,
            .k = (int32_t)L->k,
            .limit = L->limit,
            .out = out,
            .out_pixel_bytes = (size_t)L->out_wpp * 8,
            .scores = want_scores ? scores : NULL,
            .weights_split = L->bw_split,
            .split = ctx->split,
            .in_words = (size_t)L->win_h * L->win_w * L->in_wpp,
            .row_step = (size_t)L->stride * L->win_w * L->in_wpp,
            .col_step = (size_t)L->stride_w * L->in_wpp,
        };
        BNN_REQUIRE(j.in_words * 8 <= in_bytes);
        BNN_REQUIRE(want_scores ? n_pix * L->n_blocks * BNN_BLOCK <= m->score_count
                                : n_pix * j.out_pixel_bytes <= out_bytes);
        BNN_REQUIRE(!j.weights_split || 256 * j.in_words <= m->split_bytes);
        if (!want_scores)
            clear_pad_bytes(L, out, L->n_blocks);
        kern->bgemm(&j);
    } else {
        struct bnn_i8gemm_job j = {
            .in = in,
            .in_w = L->win_w,
            .in_c = L->in_c,
            .out_h = L->out_h,
            .out_w = L->out_w,
            .kernel = L->kernel,
            .kernel_w = L->kernel_w,
            .stride_h = L->stride,
            .stride_w = L->stride_w,
            .weights = L->w8,
            .n_blocks = L->n_blocks8,
            .run_pairs = L->run_pairs,
            .limit = L->limit8,
            .offset = L->offset8,
            .out = out,
            .out_pixel_bytes = (size_t)L->out_wpp * 8,
            .scores = want_scores ? scores : NULL,
            .row_step = (size_t)L->stride * L->win_w * L->in_c,
            .col_step = (size_t)L->stride_w * L->in_c,
        };
        /* The last pixel's last kernel row, pad byte included, is inside the
         * input (the kernels may read into its slack past that). */
        const size_t last_row = (((size_t)(L->out_h - 1) * L->stride + L->kernel - 1) * L->win_w +
                                 (size_t)(L->out_w - 1) * L->stride_w) * L->in_c;
        BNN_REQUIRE(last_row + 2 * (size_t)L->run_pairs <= in_bytes);
        BNN_REQUIRE(want_scores ? n_pix * L->n_blocks8 * BNN_BLOCK8 <= m->score_count
                                : n_pix * j.out_pixel_bytes <= out_bytes);
        if (!want_scores)
            clear_pad_bytes(L, out, 2 * (size_t)L->n_blocks8);
        kern->i8gemm(&j);
    }
}

/* FINN's max-pooling on {0, 1} is the OR of the window, a word at a time. */
static void run_maxpool(const struct bnn_layer *L, const uint64_t *in, size_t in_bytes, uint64_t *out,
                        size_t out_bytes)
{
    const uint32_t wpp = L->in_wpp, kh = L->kernel, kw = L->kernel_w, sh = L->stride, sw = L->stride_w;
    BNN_REQUIRE(L->out_wpp == wpp && (uint64_t)(L->out_h - 1) * sh + kh <= L->in_h &&
                (uint64_t)(L->out_w - 1) * sw + kw <= L->in_w);
    BNN_REQUIRE((size_t)L->in_h * L->in_w * wpp * 8 <= in_bytes && (size_t)L->out_h * L->out_w * wpp * 8 <= out_bytes);
    for (uint32_t oy = 0; oy < L->out_h; oy++)
        for (uint32_t ox = 0; ox < L->out_w; ox++) {
            uint64_t *o = out + ((size_t)oy * L->out_w + ox) * wpp;
            for (uint32_t w = 0; w < wpp; w++) {
                uint64_t v = 0;
                for (uint32_t ky = 0; ky < kh; ky++) {
                    const uint64_t *row = in + ((size_t)(oy * sh + ky) * L->in_w + (size_t)ox * sw) * wpp + w;
                    for (uint32_t kx = 0; kx < kw; kx++)
                        v |= row[(size_t)kx * wpp];
                }
                o[w] = v;
            }
        }
}

/* FINN's LabelSelect scans upward and replaces only on a strictly larger
 * score: a tie keeps the lowest index. */
static int32_t label_select(const int32_t *scores, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (scores[i] > scores[best])
            best = i;
    return (int32_t)best;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int32_t run_image(bnn_context *ctx, const uint8_t *image, int32_t *scores_out, uint64_t *layer_ns)
{
    const bnn_model *m = ctx->model;
    const struct bnn_kernels *kern = m->kernels;
    const void *src = image;
    size_t src_bytes = m->image_bytes;
    int cur = 0;
    int32_t cls = 0;
    uint64_t t0 = layer_ns ? now_ns() : 0;
    if (m->transpose_input) {
        transpose_chw_to_hwc(image, ctx->image, m->in_c, m->in_h, m->in_w);
        src = ctx->image;
        src_bytes = align_up(m->image_bytes + BNN_SLACK);
    } else if (m->copy_input) {
        memcpy(ctx->image, image, m->image_bytes);
        src = ctx->image;
        src_bytes = align_up(m->image_bytes + BNN_SLACK);
    }
    for (uint32_t i = 0; i < m->n_layers; i++) {
        const struct bnn_layer *L = &m->layers[i];
        uint8_t *dst = ctx->act[cur];
        size_t dst_bytes = m->act_bytes;
        switch (L->kind) {
        case BNN_LAYER_THRESHOLD:
            run_threshold(kern, L, src, src_bytes, dst, dst_bytes);
            break;
        case BNN_LAYER_MVAU:
            run_mvau(ctx, L, src, src_bytes, dst, dst_bytes);
            if (L->out_type == BNN_TYPE_INT32) {
                dst = (uint8_t *)ctx->scores;
                dst_bytes = m->score_count * 4;
            }
            break;
        case BNN_LAYER_MAXPOOL:
            run_maxpool(L, src, src_bytes, (uint64_t *)(void *)dst, dst_bytes);
            break;
        case BNN_LAYER_LABEL_SELECT:
            BNN_REQUIRE((size_t)L->in_c * 4 <= src_bytes);
            cls = label_select(src, L->in_c);
            if (scores_out)
                memcpy(scores_out, src, (size_t)L->in_c * 4);
            break;
        }
        src = dst;
        src_bytes = dst_bytes;
        cur ^= 1;
        if (layer_ns) {
            uint64_t t1 = now_ns();
            layer_ns[i] += t1 - t0;
            t0 = t1;
        }
    }
    return cls;
}

static int run_batch(bnn_context *ctx, const uint8_t *images, size_t n, int32_t *classes, int32_t *scores,
                     uint64_t *layer_ns)
{
    if (!ctx || (n && (!images || !classes)))
        return BNN_ERR_ARG;
    const bnn_model *m = ctx->model;
    const size_t image_bytes = m->image_bytes;
    for (size_t i = 0; i < n; i++)
        classes[i] = run_image(ctx, images + i * image_bytes, scores ? scores + i * m->n_classes : NULL, layer_ns);
    return BNN_OK;
}

/* A second thread entering a context that is running returns BNN_ERR_BUSY
 * instead of sharing its buffers. */
static int enter(bnn_context *ctx)
{
    return atomic_exchange_explicit(&ctx->busy, 1, memory_order_acquire) ? BNN_ERR_BUSY : BNN_OK;
}

static void leave(bnn_context *ctx)
{
    atomic_store_explicit(&ctx->busy, 0, memory_order_release);
}

int bnn_context_run(bnn_context *ctx, const uint8_t *images, size_t n, int32_t *classes, int32_t *scores)
{
    if (!ctx)
        return BNN_ERR_ARG;
    int st = enter(ctx);
    if (st != BNN_OK)
        return st;
    st = run_batch(ctx, images, n, classes, scores, NULL);
    leave(ctx);
    return st;
}

int bnn_context_run_timed(bnn_context *ctx, const uint8_t *images, size_t n, int32_t *classes, int32_t *scores,
                          uint64_t *layer_ns)
{
    if (!ctx || !layer_ns)
        return BNN_ERR_ARG;
    int st = enter(ctx);
    if (st != BNN_OK)
        return st;
    st = run_batch(ctx, images, n, classes, scores, layer_ns);
    leave(ctx);
    return st;
}

/* ---- the worker pool ---------------------------------------------------------------- */

void bnn_context_set_split_ns(bnn_context *ctx, uint64_t min_ns)
{
    ctx->split_min_ns = min_ns;
}

static atomic_uint threads_started;

unsigned bnn_threads_started(void)
{
    return atomic_load(&threads_started);
}

struct job {
    const uint8_t *images;
    int32_t *classes, *scores;
    size_t n, chunk;
    int workers; /* how many of the pool's workers take part */
};

struct worker {
    struct bnn_pool *pool;
    bnn_context *ctx;
    pthread_t thread;
    int index;
    unsigned seen; /* the last job generation this worker looked at */
};

struct bnn_pool {
    pthread_mutex_t mu;
    pthread_cond_t work; /* a new job, or shutdown */
    pthread_cond_t idle; /* a worker left a job */
    struct worker *workers[BNN_MAX_THREADS];
    int n_workers;
    unsigned gen; /* job generation, under mu */
    int shutdown; /* under mu */
    int active;   /* workers inside the current job, under mu */
    struct job job; /* under mu */
    atomic_size_t next, done; /* the next image to take; images finished */
};

/* Take chunks of the job until none are left; each thread runs them on its own context. */
static void take_chunks(struct bnn_pool *p, const struct job *j, bnn_context *ctx)
{
    const size_t ib = ctx->model->image_bytes, nc = ctx->model->n_classes;
    for (;;) {
        size_t i = atomic_fetch_add(&p->next, j->chunk);
        if (i >= j->n)
            return;
        size_t len = j->n - i < j->chunk ? j->n - i : j->chunk;
        run_batch(ctx, j->images + i * ib, len, j->classes + i, j->scores ? j->scores + i * nc : NULL, NULL);
        atomic_fetch_add(&p->done, len);
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct bnn_pool *p = w->pool;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->shutdown && p->gen == w->seen)
            pthread_cond_wait(&p->work, &p->mu);
        if (p->shutdown)
            break;
        w->seen = p->gen;
        if (w->index >= p->job.workers)
            continue;
        const struct job j = p->job;
        p->active++;
        pthread_mutex_unlock(&p->mu);
        take_chunks(p, &j, w->ctx);
        pthread_mutex_lock(&p->mu);
        p->active--;
        pthread_cond_broadcast(&p->idle);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void pool_free(struct bnn_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->shutdown = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_workers; i++) {
        pthread_join(p->workers[i]->thread, NULL);
        bnn_context_free(p->workers[i]->ctx);
        free(p->workers[i]);
    }
    pthread_cond_destroy(&p->idle);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static struct bnn_pool *pool_new(void)
{
    struct bnn_pool *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->work, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->idle, NULL) != 0) {
        pthread_cond_destroy(&p->work);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    atomic_init(&p->next, 0);
    atomic_init(&p->done, 0);
    return p;
}

/* Start workers until the pool has `want`; called by the context's owner
 * between jobs. */
static int pool_grow(bnn_context *ctx, int want)
{
    if (!ctx->pool && !(ctx->pool = pool_new()))
        return BNN_ERR_NOMEM;
    struct bnn_pool *p = ctx->pool;
    while (p->n_workers < want) {
        struct worker *w = calloc(1, sizeof(*w));
        if (!w)
            return BNN_ERR_NOMEM;
        w->pool = p;
        w->index = p->n_workers;
        w->ctx = bnn_context_new(ctx->model);
        if (!w->ctx) {
            free(w);
            return BNN_ERR_NOMEM;
        }
        pthread_mutex_lock(&p->mu);
        w->seen = p->gen;
        int rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc == 0)
            p->workers[p->n_workers++] = w;
        pthread_mutex_unlock(&p->mu);
        if (rc != 0) {
            bnn_context_free(w->ctx);
            free(w);
            return BNN_ERR_THREAD;
        }
        atomic_fetch_add(&threads_started, 1);
    }
    return BNN_OK;
}

static uint64_t ns_per_image(const bnn_context *ctx)
{
    if (ctx->ns_per_image)
        return ctx->ns_per_image;
    /* Before the first measurement: the fastest kernels' rate (about 200
     * binary and 20 8-bit G MAC/s on one AVX-512 core), so that an unknown
     * model errs towards the calling thread alone. */
    return ctx->model->binary_macs / 200 + ctx->model->integer_macs / 20 + 1;
}

/* Split the job over the caller and job->workers workers; returns when every image is done. */
static void pool_run(bnn_context *ctx, const struct job *job)
{
    struct bnn_pool *p = ctx->pool;
    pthread_mutex_lock(&p->mu);
    /* A worker may still be leaving the previous job: the counters are its until it has. */
    while (p->active > 0)
        pthread_cond_wait(&p->idle, &p->mu);
    p->job = *job;
    atomic_store(&p->next, 0);
    atomic_store(&p->done, 0);
    p->gen++;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    take_chunks(p, job, ctx);
    if (atomic_load(&p->done) < job->n) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->done) < job->n)
            pthread_cond_wait(&p->idle, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}

/* A new measure of the time per image, averaged in so that one preempted run does not decide the next split. */
static void learn(bnn_context *ctx, uint64_t ns)
{
    ctx->ns_per_image = ctx->ns_per_image ? (3 * ctx->ns_per_image + ns) / 4 : ns;
}

static int run_threads(bnn_context *ctx, const uint8_t *images, size_t n, int32_t *classes, int32_t *scores,
                       int n_threads)
{
    if (n_threads == 0) {
        /* glibc reads /sys for this on every call: once is enough. */
        static atomic_int online;
        int cores = atomic_load_explicit(&online, memory_order_relaxed);
        if (!cores) {
            long v = sysconf(_SC_NPROCESSORS_ONLN);
            cores = v > 0 ? (v < BNN_MAX_THREADS ? (int)v : BNN_MAX_THREADS) : 1;
            atomic_store_explicit(&online, cores, memory_order_relaxed);
        }
        n_threads = cores;
    }
    if (n_threads > BNN_MAX_THREADS)
        n_threads = BNN_MAX_THREADS;
    const uint64_t per_image = ns_per_image(ctx), total = per_image * n;
    /* As many threads as have split_min_ns of work each, at most one per image. */
    uint64_t useful = ctx->split_min_ns ? total / ctx->split_min_ns : (uint64_t)n_threads;
    useful = useful < n ? useful : n;
    const int ways = useful < (uint64_t)n_threads ? (int)(useful ? useful : 1) : n_threads;
    if (ways <= 1) {
        if (total < BNN_SPLIT_MIN_NS / 10 || n_threads <= 1)
            return run_batch(ctx, images, n, classes, scores, NULL);
        /* Long enough to time (two clock reads are noise here): the measure decides the next split. */
        uint64_t t0 = now_ns();
        int st = run_batch(ctx, images, n, classes, scores, NULL);
        learn(ctx, (now_ns() - t0) / n + 1);
        return st;
    }
    int st = pool_grow(ctx, ways - 1);
    if (st != BNN_OK)
        return st;
    size_t chunk = ctx->split_min_ns ? (size_t)(BNN_CHUNK_NS / per_image) : 1, most = n / (4 * (size_t)ways);
    chunk = chunk > most ? most : chunk;
    struct job job = {images, classes, scores, n, chunk ? chunk : 1, ways - 1};
    uint64_t t0 = now_ns();
    pool_run(ctx, &job);
    /* Per image on one thread: the wall time times the threads that had work. */
    learn(ctx, (now_ns() - t0) * (uint64_t)ways / n + 1);
    return BNN_OK;
}

int bnn_context_run_threads(bnn_context *ctx, const uint8_t *images, size_t n, int32_t *classes, int32_t *scores,
                            int n_threads)
{
    if (!ctx || n_threads < 0 || (n && (!images || !classes)))
        return BNN_ERR_ARG;
    if (n == 0)
        return BNN_OK;
    int st = enter(ctx);
    if (st != BNN_OK)
        return st;
    st = run_threads(ctx, images, n, classes, scores, n_threads);
    leave(ctx);
    return st;
}

int bnn_run(const bnn_model *model, const uint8_t *images, size_t n, int32_t *classes, int32_t *scores,
            int n_threads)
{
    if (!model || n_threads < 0 || (n && (!images || !classes)))
        return BNN_ERR_ARG;
    if (n == 0)
        return BNN_OK;
    bnn_context *ctx = bnn_context_new(model);
    if (!ctx)
        return BNN_ERR_NOMEM;
    int st = bnn_context_run_threads(ctx, images, n, classes, scores, n_threads);
    bnn_context_free(ctx);
    return st;
}
