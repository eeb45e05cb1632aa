// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * The runtime's kernel programs. The daemon tells the kernel which cgroups are its pods'
 * and containers' (the `containers` map, filled before a container's first instruction);
 * these programs report what happens inside them and nowhere else:
 *   exec, fork and exit of processes (BTF tracepoints, filtered in the kernel by cgroup id);
 *   bytes and packets in and out of every pod (cgroup_skb on the pod's cgroup, so host-network
 *   pods count too), per container and per protocol;
 *   OOM kills (the mark_victim tracepoint), with the memory cgroup whose limit fired, found
 *   by walking the victim's memory cgroups up to the first one at its limit;
 *   scheduling (attached only when enabled: sched_switch runs on every context switch of the
 *   node): each container's wait for a CPU as a log2 histogram, what else ran on CPUs its
 *   hooks isolated (tasks, kernel threads, IRQs, softirqs), and CFS throttling of its cgroup.
 * Events go through one ring buffer; a full buffer is counted, never silent. Counts and
 * histograms stay in maps the daemon reads, never per-event ring traffic.
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

/* How many tracked cgroups have an id whose low bits are the index: a zero answers "not a
 * container's" with one inlined array load, before the hash lookup. Every context switch of
 * a node task asks. Not pinned: the daemon fills it from `containers` at each load. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CRIO_KNOWN_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} known_slots SEC(".maps");

static __always_inline bool known(__u64 cgroup_id)
{
	__u32 slot = cgroup_id & (CRIO_KNOWN_SLOTS - 1);
	__u32 *n = bpf_map_lookup_elem(&known_slots, &slot);
	if (!n || !*n)
		return false;
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
	e->cpu = 0;
	e->intrusion = 0;
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

/* ---- Scheduling ---- */

#define PF_KTHREAD_ 0x00200000
/* At most one intrusion event per CPU in this time: an IRQ storm cannot flood the ring. */
#define INTRUSION_EVENT_GAP_NS 100000000ULL

/* Allocated per container that waited at all, not up front: the entries are per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct crio_sched_delay);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sched_delay SEC(".maps");

#define MAX_CPUS 1024

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_CPUS);
	__type(key, __u32);
	__type(value, struct crio_isolated_cpu);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} isolated_cpus SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct crio_intrusion_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} intrusions SEC(".maps");

/* Least recently seen intruders go first when it is full: the top ones stay. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct crio_intruder_key);
	__type(value, struct crio_intruder);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} intruders SEC(".maps");

/* CPU-controller cgroup id -> times one of its per-CPU run queues was throttled. Only the
 * keys the daemon put there are counted (on hybrid hosts the v1 cpu hierarchy's ids). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} throttles SEC(".maps");

/* Direct loads (CO-RE relocated through vmlinux.h's preserve_access_index), not helper calls:
 * this runs on every context switch of the node. */
static __always_inline __u64 task_cgroup(struct task_struct *t)
{
	return t->cgroups->dfl_cgrp->kn->id;
}

/* floor(log2(v)) for v > 0, without loops (the verifier counts each step). */
static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0, shift;
	shift = (v > 0xFFFFFFFFULL) << 5; v >>= shift; r |= shift;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r;
}

/* For a known `cgroup_id` only: a removed container's entry is not made again. */
static __always_inline void record_delay(__u64 cgroup_id, __u64 delta)
{
	struct crio_sched_delay *h = bpf_map_lookup_elem(&sched_delay, &cgroup_id);
	if (!h) {
		struct crio_sched_delay zero = {};
		bpf_map_update_elem(&sched_delay, &cgroup_id, &zero, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&sched_delay, &cgroup_id);
		if (!h)
			return;
	}
	__u32 slot = delta ? log2_u64(delta) : 0;
	if (slot >= CRIO_SCHED_SLOTS)
		slot = CRIO_SCHED_SLOTS - 1;
	/* Per-CPU values: no other writer, no atomics. */
	h->slots[slot] += 1;
	h->count += 1;
	h->total_ns += delta;
}

/* Counts one intrusion on `cpu` (isolated for iso->cgroup_id) by `kind` `id`, named by the
 * kernel string at `name` (NULL: no name), and sends an event unless this CPU sent one
 * within INTRUSION_EVENT_GAP_NS. */
static __always_inline void intrusion(struct crio_isolated_cpu *iso, __u32 cpu, __u32 kind, __u32 id, const char *name)
{
	__u64 cgroup_id = iso->cgroup_id;
	struct crio_intrusion_key key = { .cgroup_id = cgroup_id, .cpu = cpu, .kind = kind };
	__u64 *n = bpf_map_lookup_elem(&intrusions, &key);
	if (n) {
		__sync_fetch_and_add(n, 1);
	} else {
		__u64 one = 1;
		bpf_map_update_elem(&intrusions, &key, &one, BPF_NOEXIST);
	}
	struct crio_intruder_key who = { .cgroup_id = cgroup_id, .id = id, .kind = kind };
	struct crio_intruder *v = bpf_map_lookup_elem(&intruders, &who);
	if (v) {
		__sync_fetch_and_add(&v->count, 1);
		v->last_cpu = cpu;
		/* Its name now: a task renames itself at exec. */
		if (name)
			bpf_probe_read_kernel_str(v->comm, sizeof(v->comm), name);
	} else {
		struct crio_intruder first = { .count = 1, .last_cpu = cpu };
		if (name)
			bpf_probe_read_kernel_str(first.comm, sizeof(first.comm), name);
		bpf_map_update_elem(&intruders, &who, &first, BPF_NOEXIST);
	}
	__u64 now = bpf_ktime_get_boot_ns();
	if (now - iso->last_event_ns < INTRUSION_EVENT_GAP_NS)
		return;
	iso->last_event_ns = now;
	struct crio_event *e = reserve(CRIO_EVENT_INTRUSION, cgroup_id);
	if (!e)
		return;
	e->pid = id;
	e->tid = id;
	e->ppid = 0;
	e->cpu = cpu;
	e->intrusion = kind;
	e->comm[0] = '\0';
	if (name)
		bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), name);
	bpf_ringbuf_submit(e, 0);
}

/* The isolation of the current CPU, when a container's hooks isolated it. */
static __always_inline struct crio_isolated_cpu *isolated(__u32 *cpu)
{
	*cpu = bpf_get_smp_processor_id();
	struct crio_isolated_cpu *iso = bpf_map_lookup_elem(&isolated_cpus, cpu);
	if (!iso || !iso->cgroup_id)
		return NULL;
	return iso;
}

/* The wait that ends now: the kernel's own run-queue bookkeeping (CONFIG_SCHED_INFO) keeps
 * when `next` was queued, by wakeup or preemption, and is updated only after this tracepoint;
 * the run queue's clock is the one it was taken with. No wakeup program, no per-task state:
 * one program per switch. (A task moved to another CPU while queued is timed from its
 * arrival there, as the kernel's queue starts it again.) */
static __always_inline void waited(struct task_struct *next)
{
	/* Kernel threads (many switches of a node) are in no container. */
	if (next->flags & PF_KTHREAD_)
		return;
	__u64 queued = next->sched_info.last_queued;
	if (!queued)
		return;
	__u64 cgroup_id = task_cgroup(next);
	if (!known(cgroup_id))
		return;
	/* Every task's cfs_rq (whatever its class) belongs to its CPU's run queue. */
	__u64 now = next->se.cfs_rq->rq->clock;
	if (now > queued)
		record_delay(cgroup_id, now - queued);
}

SEC("tp_btf/sched_switch")
int BPF_PROG(crio_sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int prev_state)
{
	waited(next);
	__u32 cpu;
	struct crio_isolated_cpu *iso = isolated(&cpu);
	/* The idle task (pid 0) is no intruder; nor is the container's own. */
	if (!iso || next->pid == 0 || task_cgroup(next) == iso->cgroup_id)
		return 0;
	__u32 kind = (next->flags & PF_KTHREAD_) ? CRIO_INTRUSION_KTHREAD : CRIO_INTRUSION_TASK;
	intrusion(iso, cpu, kind, next->pid, next->comm);
	return 0;
}

SEC("tp_btf/irq_handler_entry")
int BPF_PROG(crio_irq_entry, int irq, struct irqaction *action)
{
	__u32 cpu;
	struct crio_isolated_cpu *iso = isolated(&cpu);
	if (!iso)
		return 0;
	intrusion(iso, cpu, CRIO_INTRUSION_IRQ, irq, BPF_CORE_READ(action, name));
	return 0;
}

SEC("tp_btf/softirq_entry")
int BPF_PROG(crio_softirq_entry, unsigned int vec_nr)
{
	__u32 cpu;
	struct crio_isolated_cpu *iso = isolated(&cpu);
	if (!iso)
		return 0;
	intrusion(iso, cpu, CRIO_INTRUSION_SOFTIRQ, vec_nr, NULL);
	return 0;
}

/* No tracepoint marks CFS throttling; throttle_cfs_rq says whether it throttled. */
SEC("fexit/throttle_cfs_rq")
int BPF_PROG(crio_cfs_throttle, struct cfs_rq *cfs_rq, bool throttled)
{
	if (!throttled)
		return 0;
	__u64 cgroup_id = BPF_CORE_READ(cfs_rq, tg, css.cgroup, kn, id);
	__u64 *n = bpf_map_lookup_elem(&throttles, &cgroup_id);
	if (n)
		__sync_fetch_and_add(n, 1);
	return 0;
}
