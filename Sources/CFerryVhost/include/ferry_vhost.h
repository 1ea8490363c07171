#ifndef FERRY_VHOST_H
#define FERRY_VHOST_H
#include <stdint.h>
#include <stddef.h>

/// recvmsg on a unix stream socket: up to `len` bytes into `buf`, and up to `maxfds`
/// descriptors from SCM_RIGHTS into `fds` (received close-on-exec). `*nfds` is set to the
/// number received; `*truncated` to 1 when the kernel dropped descriptors or control data
/// (MSG_CTRUNC; those that arrived are still returned). Returns the byte count, 0 at end of
/// stream, or -1 (errno).
long ferry_vhost_recv(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds, int *truncated);

/// sendmsg of `len` bytes with `nfds` descriptors (SCM_RIGHTS; 0: none). Returns bytes or -1.
long ferry_vhost_send(int sock, const void *buf, size_t len, const int *fds, int nfds);

/// Loads of shared ring fields with acquire ordering, stores with release ordering, and a
/// full fence (virtio's memory barriers, guest memory shared with another CPU).
uint16_t ferry_vhost_load_acquire_u16(const void *p);
void ferry_vhost_store_release_u16(void *p, uint16_t v);
void ferry_vhost_fence(void);

/// The byte count of a message's ancillary buffer for `n` descriptors (for tests).
int ferry_vhost_cmsg_space(int n);
#endif

#ifndef FERRY_VHOST_SOCKETS
#define FERRY_VHOST_SOCKETS
/// A listening AF_UNIX stream socket bound at `path` (close-on-exec); -1 (errno) on failure.
int ferry_vhost_listen(const char *path, int backlog);
/// A connected AF_UNIX stream socket to `path`; -1 (errno) on failure.
int ferry_vhost_connect(const char *path);
/// accept4 with SOCK_CLOEXEC, retried on EINTR; -1 (errno).
int ferry_vhost_accept(int sock);
#endif
