/*
 * client.c -- send one image to `edgeseg-run serve` and check the reply (docs/protocol.md).
 *
 *   cc -std=c11 -Wall -Wextra -O2 -o edgeseg_client client.c
 *   edgeseg_client (--unix PATH | --tcp HOST:PORT) [--frame-id N] [--repeat N] IN.ppm OUT.pgm
 *
 * IN is a binary PPM (P6, RGB) or PGM (P5, one band) with maxval 255. The mask is written as
 * a binary PGM whose pixel values are class indices; the class fractions are printed, one line
 * per class. With --repeat N the frame is sent N times on one connection (ids N, N+1, ...).
 * Exit status: 0 ok, 1 usage or I/O error, 2 a reply that breaks the protocol, 3 an error
 * status from the server (its message is printed).
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "edgeseg_protocol.h"

static int fail(int code, const char *what) {
    fprintf(stderr, "edgeseg_client: %s\n", what);
    return code;
}

/* Read a PPM/PGM header token, skipping whitespace and # comments. */
static long pnm_token(FILE *f) {
    int c = fgetc(f);
    while (c == '#' || (c != EOF && strchr(" \t\r\n", c))) {
        if (c == '#')
            while (c != EOF && c != '\n') c = fgetc(f);
        c = fgetc(f);
    }
    long v = 0;
    int digits = 0;
    for (; c >= '0' && c <= '9' && v < 1000000; c = fgetc(f), digits++) v = v * 10 + (c - '0');
    return digits ? v : -1; /* the single whitespace after the token is consumed */
}

static uint8_t *read_pnm(const char *path, uint32_t *h, uint32_t *w, uint16_t *c) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t *pix = NULL;
    char magic[2];
    if (fread(magic, 1, 2, f) == 2 && magic[0] == 'P' && (magic[1] == '6' || magic[1] == '5')) {
        long width = pnm_token(f), height = pnm_token(f), maxval = pnm_token(f);
        *c = magic[1] == '6' ? 3 : 1;
        if (width > 0 && height > 0 && maxval == 255) {
            size_t n = (size_t)width * (size_t)height * *c;
            pix = malloc(n);
            if (pix && fread(pix, 1, n, f) != n) {
                free(pix);
                pix = NULL;
            }
            *w = (uint32_t)width;
            *h = (uint32_t)height;
        }
    }
    fclose(f);
    return pix;
}

static int connect_to(const char *unix_path, const char *tcp) {
    if (unix_path) {
        struct sockaddr_un sa;
        memset(&sa, 0, sizeof sa);
        sa.sun_family = AF_UNIX;
        if (strlen(unix_path) >= sizeof sa.sun_path) return -1;
        strcpy(sa.sun_path, unix_path);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) return fd;
        if (fd >= 0) close(fd);
        return -1;
    }
    char host[256];
    const char *colon = strrchr(tcp, ':');
    if (!colon || (size_t)(colon - tcp) >= sizeof host) return -1;
    memcpy(host, tcp, (size_t)(colon - tcp));
    host[colon - tcp] = '\0';
    struct addrinfo hints, *res;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0) return -1;
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static int send_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t k = send(fd, p, n, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int recv_all(int fd, uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t k = recv(fd, p, n, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1; /* error, or the server closed the connection */
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* One round trip; writes the mask into `mask` (h*w bytes) and prints the fractions. */
static int round_trip(int fd, const eseg_request_header *req, const uint8_t *pix, uint8_t *mask) {
    uint8_t head[ESEG_REQUEST_SIZE], rbytes[ESEG_REPLY_SIZE], frac[4 * 256];
    eseg_reply_header rep;
    eseg_encode_request(req, head);
    if (send_all(fd, head, sizeof head) || send_all(fd, pix, (size_t)req->payload_length))
        return fail(1, "cannot send the frame (server gone?)");
    if (recv_all(fd, rbytes, sizeof rbytes)) return fail(2, "connection closed before the reply");
    if (eseg_decode_reply(rbytes, &rep)) return fail(2, "reply has a wrong magic or version");
    if (rep.status != ESEG_STATUS_OK) {
        char msg[ESEG_MAX_MESSAGE + 1];
        size_t n = rep.payload_length <= ESEG_MAX_MESSAGE ? (size_t)rep.payload_length : 0;
        if (recv_all(fd, (uint8_t *)msg, n)) n = 0;
        msg[n] = '\0';
        fprintf(stderr, "edgeseg_client: server status %u: %s\n", rep.status, msg);
        return 3;
    }
    uint64_t npix = (uint64_t)req->height * req->width;
    if (rep.frame_id != req->frame_id || rep.height != req->height || rep.width != req->width ||
        rep.num_classes == 0 || rep.num_classes > 256 ||
        rep.payload_length != npix + 4u * rep.num_classes)
        return fail(2, "reply header does not match the request");
    if (recv_all(fd, mask, (size_t)npix) || recv_all(fd, frac, 4u * rep.num_classes))
        return fail(2, "reply payload is truncated");
    uint64_t counts[256] = {0};
    for (uint64_t i = 0; i < npix; i++) counts[mask[i]]++;
    printf("frame %u: %ux%u mask, %u classes, inference %llu us\n", rep.frame_id, rep.height,
           rep.width, rep.num_classes, (unsigned long long)rep.inference_us);
    for (unsigned k = 0; k < rep.num_classes; k++) {
        float f = eseg_get_f32(frac + 4 * k);
        if (fabs(f - (double)counts[k] / (double)npix) > 1e-6)
            return fail(2, "class fractions disagree with the mask");
        printf("class %u: %.6f\n", k, f);
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *unix_path = NULL, *tcp = NULL, *in = NULL, *out = NULL;
    unsigned long frame_id = 1, repeat = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--unix") && i + 1 < argc) unix_path = argv[++i];
        else if (!strcmp(argv[i], "--tcp") && i + 1 < argc) tcp = argv[++i];
        else if (!strcmp(argv[i], "--frame-id") && i + 1 < argc) frame_id = strtoul(argv[++i], 0, 10);
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = strtoul(argv[++i], 0, 10);
        else if (!in) in = argv[i];
        else if (!out) out = argv[i];
        else in = NULL, i = argc; /* too many arguments */
    }
    if (!in || !out || !unix_path == !tcp || repeat < 1)
        return fail(1, "usage: edgeseg_client (--unix PATH | --tcp HOST:PORT) [--frame-id N] "
                       "[--repeat N] IN.ppm OUT.pgm");
    eseg_request_header req;
    memset(&req, 0, sizeof req);
    uint8_t *pix = read_pnm(in, &req.height, &req.width, &req.channels);
    if (!pix) return fail(1, "cannot read the input: need a binary PPM (P6) or PGM (P5), maxval 255");
    memcpy(req.magic, ESEG_REQUEST_MAGIC, 4);
    req.version = ESEG_PROTOCOL_VERSION;
    req.dtype = ESEG_DTYPE_UINT8;
    req.payload_length = (uint64_t)req.height * req.width * req.channels;
    uint8_t *mask = malloc((size_t)req.height * req.width);
    if (!mask) return fail(1, "out of memory");
    int fd = connect_to(unix_path, tcp), rc = 0;
    if (fd < 0) rc = fail(1, "cannot connect (is `edgeseg-run serve` listening there?)");
    for (unsigned long r = 0; rc == 0 && r < repeat; r++) {
        req.frame_id = (uint32_t)(frame_id + r);
        rc = round_trip(fd, &req, pix, mask);
    }
    if (fd >= 0) close(fd);
    if (rc == 0) {
        FILE *f = fopen(out, "wb");
        size_t n = (size_t)req.height * req.width;
        if (!f || fprintf(f, "P5\n%u %u\n255\n", req.width, req.height) < 0 ||
            fwrite(mask, 1, n, f) != n)
            rc = fail(1, "cannot write the mask");
        if (f && fclose(f) != 0 && rc == 0) rc = fail(1, "cannot write the mask");
    }
    free(mask);
    free(pix);
    return rc;
}
