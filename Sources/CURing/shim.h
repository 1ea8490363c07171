// liburing from Debian's liburing-dev: its static inline helpers (io_uring_get_sqe,
// io_uring_prep_read, ...) are callable from Swift as they are.
#include <liburing.h>
