/* tapsplice DPDK shim: real functions for DPDK's static-inline fast path and macros,
 * so that Rust can call them through the dynamically loaded library. */
#ifndef TAPSPLICE_SHIM_H
#define TAPSPLICE_SHIM_H
#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;

uint16_t ts_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t ts_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *ts_pktmbuf_alloc(struct rte_mempool *mp);
int ts_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **pkts, unsigned n);
void ts_pktmbuf_free(struct rte_mbuf *m);
void ts_pktmbuf_free_bulk(struct rte_mbuf **pkts, unsigned n);
int ts_errno(void);
void ts_set_errno(int e);
unsigned ts_lcore_id(void);
uint64_t ts_rdtsc(void);
void ts_pause(void);
/* rte_pktmbuf_mtod(m, void *) */
void *ts_mtod(struct rte_mbuf *m);
/* rte_eth_dev_is_valid_port */
int ts_eth_dev_is_valid_port(uint16_t port);
#endif
