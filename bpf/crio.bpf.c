// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * The runtime's kernel programs. The daemon tells the kernel which cgroups are its pods'
 * and containers' (the `containers` map, filled before a container's first instruction);
 * these programs report what happens inside them and nowhere else:
 *   exec, fork and exit of processes (BTF tracepoints, filtered in the kernel by cgroup id);
 *   bytes and packets in and out of every pod (cgroup_skb on the pod's cgroup, so host-network
 *   pods count too), per container and per protocol;
 *   OOM kills (the mark_victim tracepoint), with the memory cgroup whose limit fired, found
 *   by walking the victim's memory cgroups up to the first one at its limit.
 * Everything goes through one ring buffer; a full buffer is counted, never silent.
 * CO-RE: field offsets are relocated against the running kernel's BTF at load.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "crio_events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct crio_cgroup_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} containers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CRIO_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct crio_net_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} net SEC(".maps");

static __always_inline bool known(__u64 cgroup_id)
{
	return bpf_map_lookup_elem(&containers, &cgroup_id) != NULL;
}

static __always_inline struct crio_event *reserve(__u32 kind, __u64 cgroup_id)
{
	struct crio_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__u32 key = CRIO_COUNTER_LOST;
		__u64 *lost = bpf_map_lookup_elem(&counters, &key);
		if (lost)
			*lost += 1; /* per-CPU: no other writer */
		return NULL;
	}
	e->timestamp_ns = bpf_ktime_get_boot_ns();
	e->cgroup_id = cgroup_id;
	e->memcg_id = 0;
	e->kind = kind;
	e->exit_code = 0;
	e->flags = 0;
	e->filename[0] = '\0';
	return e;
}

static __always_inline void fill_task(struct crio_event *e, struct task_struct *t)
{
	e->pid = BPF_CORE_READ(t, tgid);
	e->tid = BPF_CORE_READ(t, pid);
	e->ppid = BPF_CORE_READ(t, real_parent, tgid);
	BPF_CORE_READ_STR_INTO(&e->comm, t, comm);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(crio_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u64 cgroup_id = bpf_get_current_cgroup_id();
	if (!known(cgroup_id))
		return 0;
	struct crio_event *e = reserve(CRIO_EVENT_EXEC, cgroup_id);
	if (!e)
		return 0;
	fill_task(e, p);
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), BPF_CORE_READ(bprm, filename));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(crio_fork, struct task_struct *parent, struct task_struct *child)
{
	/* New processes only: a new thread shares its parent's thread group. */
	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0;
	__u64 cgroup_id = bpf_get_current_cgroup_id();
	if (!known(cgroup_id))
		return 0;
	struct crio_event *e = reserve(CRIO_EVENT_FORK, cgroup_id);
	if (!e)
		return 0;
	fill_task(e, child);
	e->ppid = BPF_CORE_READ(parent, tgid);
	BPF_CORE_READ_STR_INTO(&e->comm, parent, comm);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(crio_exit, struct task_struct *p)
{
	/* The process ends with its last thread: then no thread of the group is live. */
	if (BPF_CORE_READ(p, signal, live.counter) != 0)
		return 0;
	__u64 cgroup_id = bpf_get_current_cgroup_id();
	if (!known(cgroup_id))
		return 0;
	struct crio_event *e = reserve(CRIO_EVENT_EXIT, cgroup_id);
	if (!e)
		return 0;
	fill_task(e, p);
	e->exit_code = BPF_CORE_READ(p, exit_code);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* Page counters within this many pages of their limit count as the limit that fired: a
 * failed charge leaves usage short of the limit by at most the charge (a huge page). */
#define OOM_SLACK_PAGES 512
#define MAX_MEMCG_DEPTH 16

/* The memory cgroup whose limit the OOM kill of `task` answers: charges are checked from
 * the task's own memcg upward and fail at the first one over its limit, so the lowest
 * ancestor at its limit is it. 0 when none is: the node ran out of memory. */
static __always_inline __u64 limit_memcg(struct task_struct *task)
{
	int memory = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	struct css_set *cset = BPF_CORE_READ(task, cgroups);
	struct cgroup_subsys_state *css = NULL;
	if (memory < 0 || memory >= CGROUP_SUBSYS_COUNT)
		return 0;
	bpf_probe_read_kernel(&css, sizeof(css), &cset->subsys[memory]);
	for (int i = 0; i < MAX_MEMCG_DEPTH && css; i++) {
		struct mem_cgroup *memcg = container_of(css, struct mem_cgroup, css);
		long usage = BPF_CORE_READ(memcg, memory.usage.counter);
		unsigned long max = BPF_CORE_READ(memcg, memory.max);
		/* An unset limit is PAGE_COUNTER_MAX, far above any real one. */
		if (max < (1UL << 40) && usage + OOM_SLACK_PAGES >= (long)max)
			return BPF_CORE_READ(css, cgroup, kn, id);
		css = BPF_CORE_READ(css, parent);
	}
	return 0;
}

SEC("tp_btf/mark_victim")
int BPF_PROG(crio_oom_victim, struct task_struct *task)
{
	__u64 cgroup_id = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
	if (!known(cgroup_id))
		return 0;
	struct crio_event *e = reserve(CRIO_EVENT_OOM, cgroup_id);
	if (!e)
		return 0;
	fill_task(e, task);
	e->memcg_id = limit_memcg(task);
	e->flags = CRIO_FLAG_MEMCG_KNOWN;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17

/* The transport protocol of the IP packet at the start of `skb` (cgroup_skb sees L3). */
static __always_inline __u8 transport(struct __sk_buff *skb)
{
	__u8 proto = 0;
	if (skb->protocol == bpf_htons(ETH_P_IP))
		bpf_skb_load_bytes(skb, 9, &proto, 1);
	else if (skb->protocol == bpf_htons(ETH_P_IPV6))
		bpf_skb_load_bytes(skb, 6, &proto, 1);
	return proto;
}

/* Loopback has this index in every network namespace. */
#define LOOPBACK_IFINDEX 1

static __always_inline void count(struct __sk_buff *skb, bool ingress)
{
	/* What stays on loopback never crossed the pod's network. */
	if (skb->ifindex == LOOPBACK_IFINDEX)
		return;
	__u64 cgroup_id = bpf_skb_cgroup_id(skb);
	struct crio_net_counters *c = bpf_map_lookup_elem(&net, &cgroup_id);
	if (!c) {
		struct crio_net_counters zero = {};
		bpf_map_update_elem(&net, &cgroup_id, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&net, &cgroup_id);
		if (!c)
			return;
	}
	__u64 len = skb->len;
	__u8 proto = transport(skb);
	/* Per-CPU values: no other writer, no atomics. */
	if (ingress) {
		c->rx_bytes += len;
		c->rx_packets += 1;
		if (proto == IPPROTO_TCP_)
			c->tcp_rx_bytes += len;
		else if (proto == IPPROTO_UDP_)
			c->udp_rx_bytes += len;
	} else {
		c->tx_bytes += len;
		c->tx_packets += 1;
		if (proto == IPPROTO_TCP_)
			c->tcp_tx_bytes += len;
		else if (proto == IPPROTO_UDP_)
			c->udp_tx_bytes += len;
	}
}

/* Accounting only: every packet passes. */
SEC("cgroup_skb/ingress")
int crio_ingress(struct __sk_buff *skb)
{
	count(skb, true);
	return 1;
}

SEC("cgroup_skb/egress")
int crio_egress(struct __sk_buff *skb)
{
	count(skb, false);
	return 1;
}
