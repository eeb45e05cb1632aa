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

/* OOM: memcg_id was looked for, so 0 there means no cgroup limit fired: the node's did. */
#define CRIO_FLAG_MEMCG_KNOWN 1

/* Index of the `counters` per-CPU array. */
enum crio_counter {
	CRIO_COUNTER_LOST = 0, /* events dropped: the ring buffer was full */
	CRIO_COUNTER_MAX = 1,
};

_Static_assert(sizeof(struct crio_cgroup_info) == 152, "crio_cgroup_info layout");
_Static_assert(sizeof(struct crio_event) == 320, "crio_event layout");
_Static_assert(sizeof(struct crio_net_counters) == 64, "crio_net_counters layout");

#endif
