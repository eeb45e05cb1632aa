/* Types shared by the kernel programs (crio.bpf.c) and the loader (crio-ebpf, whose
 * #[repr(C)] mirrors in crio-ebpf-common are checked against these sizes). */
#ifndef CRIO_EVENTS_H
#define CRIO_EVENTS_H

#define CRIO_COMM_LEN 16
#define CRIO_FILENAME_LEN 256
/* Runtime ids are 64 hex digits: room for them and a NUL, so bpftool prints strings. */
#define CRIO_ID_LEN 72

enum crio_event_kind {
	CRIO_EVENT_EXEC = 1,
	CRIO_EVENT_FORK = 2,
	CRIO_EVENT_EXIT = 3,
	CRIO_EVENT_OOM = 4,
	/* Something else ran on a CPU a container's hooks isolated (rate-limited per CPU). */
	CRIO_EVENT_INTRUSION = 5,
};

/* What ran on an isolated CPU that was not the container's. */
enum crio_intrusion_kind {
	CRIO_INTRUSION_TASK = 1,    /* a user task */
	CRIO_INTRUSION_KTHREAD = 2, /* a kernel thread */
	CRIO_INTRUSION_IRQ = 3,     /* a hard IRQ handler */
	CRIO_INTRUSION_SOFTIRQ = 4,
};

enum crio_cgroup_kind {
	CRIO_CGROUP_CONTAINER = 1,
	CRIO_CGROUP_POD = 2,
};

/* Value of the `containers` map, keyed by cgroup id (the default-hierarchy cgroup: the
 * container's own on v2, its unified-hierarchy one on hybrid hosts). */
struct crio_cgroup_info {
	char pod_id[CRIO_ID_LEN];
	char container_id[CRIO_ID_LEN];
	__u32 kind;
	__u32 reserved;
};

/* One record of the `events` ring buffer. */
struct crio_event {
	__u64 timestamp_ns; /* CLOCK_BOOTTIME */
	__u64 cgroup_id;
	/* OOM: the memory cgroup whose limit fired (0: the node's). */
	__u64 memcg_id;
	__u32 kind;
	__u32 pid;  /* thread group id as the host sees it */
	__u32 tid;
	__u32 ppid; /* fork: the parent; others: the real parent's thread group id */
	__s32 exit_code; /* exit: the wait status (code << 8, or the signal) */
	__u32 flags;     /* CRIO_FLAG_* */
	/* INTRUSION: the CPU, and what intruded (enum crio_intrusion_kind); pid is then the
	 * task's thread id, the IRQ number or the softirq vector, comm its name. */
	__u32 cpu;
	__u32 intrusion;
	char comm[CRIO_COMM_LEN];
	char filename[CRIO_FILENAME_LEN]; /* exec: the file run */
};

/* Value of the `net` per-CPU map, keyed by the cgroup id of the socket's owner: what crossed
 * the pod's cgroup_skb hooks, loopback left out. Bytes are IP packet lengths. */
struct crio_net_counters {
	__u64 rx_bytes;
	__u64 rx_packets;
	__u64 tx_bytes;
	__u64 tx_packets;
	__u64 tcp_rx_bytes;
	__u64 tcp_tx_bytes;
	__u64 udp_rx_bytes;
	__u64 udp_tx_bytes;
};

/* Slots of the `known_slots` filter: tracked cgroups are counted at their id's low bits. */
#define CRIO_KNOWN_SLOTS (1 << 16)

/* Log2 slots of the scheduling delay histogram: slot i counts waits of [2^i, 2^(i+1)) ns
 * (slot 0 also those under 1 ns), the last one everything from 2^35 ns (34 s) on. */
#define CRIO_SCHED_SLOTS 36

/* Value of the `sched_delay` per-CPU map, keyed by container cgroup id: how long its tasks
 * waited, runnable, for a CPU (from wakeup or preemption to running). */
struct crio_sched_delay {
	__u64 slots[CRIO_SCHED_SLOTS];
	__u64 count;
	__u64 total_ns;
};

/* Value of the `isolated_cpus` array, indexed by CPU: the container whose hooks isolated it
 * (0: none), and when the last intrusion event of this CPU was sent (boot-clock ns). */
struct crio_isolated_cpu {
	__u64 cgroup_id;
	__u64 last_event_ns;
};

/* Key of the `intrusions` map (value: a count): what intruded, where, on whose CPU. */
struct crio_intrusion_key {
	__u64 cgroup_id;
	__u32 cpu;
	__u32 kind;
};

/* Key and value of the `intruders` LRU map: who intruded on a container's CPUs. `id` is the
 * thread id (tasks: each thread by its own name), the IRQ number or the softirq vector. */
struct crio_intruder_key {
	__u64 cgroup_id;
	__u32 id;
	__u32 kind;
};

struct crio_intruder {
	__u64 count;
	__u32 last_cpu;
	__u32 reserved;
	char comm[CRIO_COMM_LEN];
};

/* OOM: memcg_id was looked for, so 0 there means no cgroup limit fired: the node's did. */
#define CRIO_FLAG_MEMCG_KNOWN 1

/* Index of the `counters` per-CPU array. */
enum crio_counter {
	CRIO_COUNTER_LOST = 0, /* events dropped: the ring buffer was full */
	CRIO_COUNTER_MAX = 1,
};

_Static_assert(sizeof(struct crio_cgroup_info) == 152, "crio_cgroup_info layout");
_Static_assert(sizeof(struct crio_event) == 328, "crio_event layout");
_Static_assert(sizeof(struct crio_sched_delay) == 304, "crio_sched_delay layout");
_Static_assert(sizeof(struct crio_isolated_cpu) == 16, "crio_isolated_cpu layout");
_Static_assert(sizeof(struct crio_intrusion_key) == 16, "crio_intrusion_key layout");
_Static_assert(sizeof(struct crio_intruder_key) == 16, "crio_intruder_key layout");
_Static_assert(sizeof(struct crio_intruder) == 32, "crio_intruder layout");
_Static_assert(sizeof(struct crio_net_counters) == 64, "crio_net_counters layout");

#endif
