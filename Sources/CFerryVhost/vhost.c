#define _GNU_SOURCE
#include "ferry_vhost.h"
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FERRY_VHOST_MAX_FDS 16

long ferry_vhost_recv(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds, int *truncated) {
    union { char buf[CMSG_SPACE(sizeof(int) * FERRY_VHOST_MAX_FDS)]; struct cmsghdr align; } control;
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    struct msghdr msg = { 0 };
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    *nfds = 0;
    *truncated = 0;
    ssize_t n;
    do { n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); } while (n < 0 && errno == EINTR);
    if (n < 0) return -1;
    if (msg.msg_flags & MSG_CTRUNC) *truncated = 1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *data = (int *)CMSG_DATA(c);
        for (int i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, data + i, sizeof(int));
            if (*nfds < maxfds) fds[(*nfds)++] = fd;
            else { close(fd); *truncated = 1; }
        }
    }
    return (long)n;
}

long ferry_vhost_send(int sock, const void *buf, size_t len, const int *fds, int nfds) {
    union { char buf[CMSG_SPACE(sizeof(int) * FERRY_VHOST_MAX_FDS)]; struct cmsghdr align; } control;
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    struct msghdr msg = { 0 };
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds > FERRY_VHOST_MAX_FDS) { errno = EINVAL; return -1; }
    if (nfds > 0) {
        memset(control.buf, 0, sizeof(control.buf));
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    ssize_t n;
    do { n = sendmsg(sock, &msg, MSG_NOSIGNAL); } while (n < 0 && errno == EINTR);
    return (long)n;
}

uint16_t ferry_vhost_load_acquire_u16(const void *p) {
    return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE);
}

void ferry_vhost_store_release_u16(void *p, uint16_t v) {
    __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE);
}

void ferry_vhost_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

int ferry_vhost_cmsg_space(int n) { return (int)CMSG_SPACE(sizeof(int) * n); }

#include <sys/un.h>

static int fill_address(struct sockaddr_un *addr, const char *path) {
    memset(addr, 0, sizeof(*addr));
    addr->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(addr->sun_path)) { errno = ENAMETOOLONG; return -1; }
    strcpy(addr->sun_path, path);
    return 0;
}

int ferry_vhost_listen(const char *path, int backlog) {
    struct sockaddr_un addr;
    if (fill_address(&addr, path) < 0) return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, backlog) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int ferry_vhost_connect(const char *path) {
    struct sockaddr_un addr;
    if (fill_address(&addr, path) < 0) return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int ferry_vhost_accept(int sock) {
    int fd;
    do { fd = accept4(sock, NULL, NULL, SOCK_CLOEXEC); } while (fd < 0 && errno == EINTR);
    return fd;
}
