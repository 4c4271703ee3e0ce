#include <rte_config.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_cycles.h>
#include <rte_pause.h>
#include "shim.h"

uint16_t ts_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_rx_burst(port, queue, pkts, n); }

uint16_t ts_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_tx_burst(port, queue, pkts, n); }

struct rte_mbuf *ts_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

int ts_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **pkts, unsigned n)
{ return rte_pktmbuf_alloc_bulk(mp, pkts, n); }

void ts_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

void ts_pktmbuf_free_bulk(struct rte_mbuf **pkts, unsigned n) { rte_pktmbuf_free_bulk(pkts, n); }

int ts_errno(void) { return rte_errno; }

void ts_set_errno(int e) { rte_errno = e; }

unsigned ts_lcore_id(void) { return rte_lcore_id(); }

uint64_t ts_rdtsc(void) { return rte_rdtsc(); }

void ts_pause(void) { rte_pause(); }

void *ts_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }

int ts_eth_dev_is_valid_port(uint16_t port) { return rte_eth_dev_is_valid_port(port); }
