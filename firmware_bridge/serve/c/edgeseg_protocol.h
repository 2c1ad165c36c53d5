/*
 * edgeseg_protocol.h -- the frame protocol of `edgeseg-run serve` (docs/protocol.md).
 *
 * A request is a 32-byte header followed by height*width*channels pixels (HWC, row-major);
 * a reply is a 40-byte header followed by the height*width uint8 class mask and num_classes
 * float32 class fractions (status OK) or a UTF-8 error message (any other status).
 * All integers and floats are little-endian.
 *
 * The structs below mirror the wire layout (static assertions pin every offset), so on a
 * little-endian host they may be copied to and from the wire with memcpy. The
 * eseg_encode_request() / eseg_decode_reply() helpers do the byte order explicitly and work
 * on any host. C99 with C11 _Static_assert, or C++11.
 */
#ifndef EDGESEG_PROTOCOL_H
#define EDGESEG_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#define ESEG_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define ESEG_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

#define ESEG_PROTOCOL_VERSION 1u
#define ESEG_REQUEST_MAGIC "ESRQ" /* 4 bytes, no terminator on the wire */
#define ESEG_REPLY_MAGIC "ESRP"
#define ESEG_REQUEST_SIZE 32u
#define ESEG_REPLY_SIZE 40u
#define ESEG_MAX_MESSAGE 512u /* longest error message a server sends */

/* dtype codes of the request pixels */
#define ESEG_DTYPE_UINT8 1u
#define ESEG_DTYPE_UINT16 2u
#define ESEG_DTYPE_FLOAT32 3u

/* request flags; reserved bits must be 0 */
#define ESEG_FLAG_NO_MASK 0x0001u /* reply with class fractions only */

/* reply status codes */
#define ESEG_STATUS_OK 0u
#define ESEG_STATUS_BAD_MAGIC 1u
#define ESEG_STATUS_BAD_VERSION 2u
#define ESEG_STATUS_BAD_HEADER 3u
#define ESEG_STATUS_LENGTH_MISMATCH 4u
#define ESEG_STATUS_TOO_LARGE 5u
#define ESEG_STATUS_UNSUPPORTED_DTYPE 6u
#define ESEG_STATUS_UNSUPPORTED_CHANNELS 7u
#define ESEG_STATUS_INTERNAL_ERROR 8u
#define ESEG_STATUS_BUSY 9u
#define ESEG_STATUS_REJECTED 10u

typedef struct eseg_request_header {
    char magic[4];           /* "ESRQ" */
    uint16_t version;        /* ESEG_PROTOCOL_VERSION */
    uint16_t flags;          /* ESEG_FLAG_* */
    uint32_t frame_id;       /* echoed in the reply */
    uint32_t height;         /* rows, > 0 */
    uint32_t width;          /* columns, > 0 */
    uint16_t channels;       /* bands, as the model takes them */
    uint16_t dtype;          /* ESEG_DTYPE_* */
    uint64_t payload_length; /* height * width * channels * sizeof(pixel) */
} eseg_request_header;

typedef struct eseg_reply_header {
    char magic[4];           /* "ESRP" */
    uint16_t version;        /* ESEG_PROTOCOL_VERSION */
    uint16_t status;         /* ESEG_STATUS_* */
    uint32_t frame_id;       /* the request's (0 when its header was unreadable) */
    uint32_t height;         /* mask rows (0 on error or with ESEG_FLAG_NO_MASK) */
    uint32_t width;          /* mask columns */
    uint16_t num_classes;    /* float32 fractions after the mask */
    uint16_t reserved;       /* 0 */
    uint64_t inference_us;   /* model time for this frame, microseconds */
    uint64_t payload_length; /* OK: height * width + 4 * num_classes; else message bytes */
} eseg_reply_header;

ESEG_STATIC_ASSERT(sizeof(eseg_request_header) == ESEG_REQUEST_SIZE, "request header size");
ESEG_STATIC_ASSERT(offsetof(eseg_request_header, version) == 4, "request version offset");
ESEG_STATIC_ASSERT(offsetof(eseg_request_header, flags) == 6, "request flags offset");
ESEG_STATIC_ASSERT(offsetof(eseg_request_header, frame_id) == 8, "request frame_id offset");
ESEG_STATIC_ASSERT(offsetof(eseg_request_header, height) == 12, "request height offset");
ESEG_STATIC_ASSERT(offsetof(eseg_request_header, width) == 16, "request width offset");
ESEG_STATIC_ASSERT(offsetof(eseg_request_header, channels) == 20, "request channels offset");
ESEG_STATIC_ASSERT(offsetof(eseg_request_header, dtype) == 22, "request dtype offset");
ESEG_STATIC_ASSERT(offsetof(eseg_request_header, payload_length) == 24, "request length offset");
ESEG_STATIC_ASSERT(sizeof(eseg_reply_header) == ESEG_REPLY_SIZE, "reply header size");
ESEG_STATIC_ASSERT(offsetof(eseg_reply_header, version) == 4, "reply version offset");
ESEG_STATIC_ASSERT(offsetof(eseg_reply_header, status) == 6, "reply status offset");
ESEG_STATIC_ASSERT(offsetof(eseg_reply_header, frame_id) == 8, "reply frame_id offset");
ESEG_STATIC_ASSERT(offsetof(eseg_reply_header, height) == 12, "reply height offset");
ESEG_STATIC_ASSERT(offsetof(eseg_reply_header, width) == 16, "reply width offset");
ESEG_STATIC_ASSERT(offsetof(eseg_reply_header, num_classes) == 20, "reply classes offset");
ESEG_STATIC_ASSERT(offsetof(eseg_reply_header, reserved) == 22, "reply reserved offset");
ESEG_STATIC_ASSERT(offsetof(eseg_reply_header, inference_us) == 24, "reply time offset");
ESEG_STATIC_ASSERT(offsetof(eseg_reply_header, payload_length) == 32, "reply length offset");

/* little-endian field access, independent of the host's byte order */
static inline void eseg_put_le(uint8_t *p, uint64_t v, unsigned n) {
    for (unsigned i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8u * i));
}

static inline uint64_t eseg_get_le(const uint8_t *p, unsigned n) {
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++) v |= (uint64_t)p[i] << (8u * i);
    return v;
}

/* Serialise a request header into its 32 wire bytes. */
static inline void eseg_encode_request(const eseg_request_header *h,
                                       uint8_t out[ESEG_REQUEST_SIZE]) {
    for (unsigned i = 0; i < 4; i++) out[i] = (uint8_t)h->magic[i];
    eseg_put_le(out + 4, h->version, 2);
    eseg_put_le(out + 6, h->flags, 2);
    eseg_put_le(out + 8, h->frame_id, 4);
    eseg_put_le(out + 12, h->height, 4);
    eseg_put_le(out + 16, h->width, 4);
    eseg_put_le(out + 20, h->channels, 2);
    eseg_put_le(out + 22, h->dtype, 2);
    eseg_put_le(out + 24, h->payload_length, 8);
}

/* Parse the 40 wire bytes of a reply header; returns 0, or -1 for a wrong magic or version. */
static inline int eseg_decode_reply(const uint8_t in[ESEG_REPLY_SIZE], eseg_reply_header *h) {
    for (unsigned i = 0; i < 4; i++) h->magic[i] = (char)in[i];
    h->version = (uint16_t)eseg_get_le(in + 4, 2);
    h->status = (uint16_t)eseg_get_le(in + 6, 2);
    h->frame_id = (uint32_t)eseg_get_le(in + 8, 4);
    h->height = (uint32_t)eseg_get_le(in + 12, 4);
    h->width = (uint32_t)eseg_get_le(in + 16, 4);
    h->num_classes = (uint16_t)eseg_get_le(in + 20, 2);
    h->reserved = (uint16_t)eseg_get_le(in + 22, 2);
    h->inference_us = eseg_get_le(in + 24, 8);
    h->payload_length = eseg_get_le(in + 32, 8);
    for (unsigned i = 0; i < 4; i++)
        if (h->magic[i] != ESEG_REPLY_MAGIC[i]) return -1;
    return h->version == ESEG_PROTOCOL_VERSION ? 0 : -1;
}

/* A little-endian float32 (class fraction) from 4 wire bytes. */
static inline float eseg_get_f32(const uint8_t *p) {
    uint32_t bits = (uint32_t)eseg_get_le(p, 4);
    float f;
    memcpy(&f, &bits, sizeof f); /* float and integer share the host's byte order */
    return f;
}

#ifdef __cplusplus
}
#endif

#endif /* EDGESEG_PROTOCOL_H */
