// libseccomp from Debian's libseccomp-dev: builds the seccomp BPF allow-list of FerrySandbox
// (SyscallAllowList.swift) and loads it. Its constants are macros Swift cannot import
// (SCMP_ACT_ALLOW is a function-like macro), so they are restated here as values.
#include <stdint.h>
#include <seccomp.h>

static const uint32_t ferry_scmp_act_allow = SCMP_ACT_ALLOW;
static const uint32_t ferry_scmp_act_log = SCMP_ACT_LOG;
static const uint32_t ferry_scmp_act_trap = SCMP_ACT_TRAP;
static const uint32_t ferry_scmp_act_kill_process = SCMP_ACT_KILL_PROCESS;
/// An action that makes a call fail with `error` instead (for calls Ferry probes and can do without).
static inline uint32_t ferry_scmp_act_errno(uint16_t error) { return SCMP_ACT_ERRNO(error); }
/// seccomp_rule_add with no argument filter (the variadic form cannot be called from Swift).
static inline int ferry_seccomp_allow(scmp_filter_ctx ctx, uint32_t action, int syscall) {
    return seccomp_rule_add(ctx, action, syscall, 0);
}
/// Allows `syscall` only when its first argument equals `value`.
static inline int ferry_seccomp_allow_if_arg0(scmp_filter_ctx ctx, uint32_t action, int syscall, uint64_t value) {
    return seccomp_rule_add(ctx, action, syscall, 1, SCMP_A0(SCMP_CMP_EQ, value));
}
/// Allows `syscall` only when its first argument has none of the bits in `mask`.
static inline int ferry_seccomp_allow_if_arg0_clear(scmp_filter_ctx ctx, uint32_t action, int syscall, uint64_t mask) {
    return seccomp_rule_add(ctx, action, syscall, 1, SCMP_A0(SCMP_CMP_MASKED_EQ, mask, 0));
}
