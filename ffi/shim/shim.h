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

/* One member of a bonding device, as the bonding PMD sees it. */
struct ts_bond_member {
    uint16_t port_id;
    /* In the bond's active list (link up; for 802.3ad: also collecting/distributing). */
    uint8_t active;
    /* 802.3ad only (else 0): actor and partner state bits (STATE_*), whether the
     * selection logic chose this member's aggregator, the aggregator's port id and the
     * partner's system MAC. */
    uint8_t actor_state;
    uint8_t partner_state;
    uint8_t selected;
    uint16_t agg_port_id;
    uint8_t partner_system[6];
};

/* The bonding mode of `bond` (negative if it is not a bonding device). */
int ts_bond_mode(uint16_t bond);
/* rte_eth_bond_primary_get / _set. */
int ts_bond_primary_get(uint16_t bond);
int ts_bond_primary_set(uint16_t bond, uint16_t member);
/* Runs the link-state-change callbacks registered on `port` (what its driver does on a
 * link interrupt): a bonding device over it re-reads the member's link and activates or
 * deactivates it. For members whose driver never raises the interrupt (net_tap). */
int ts_link_event(uint16_t port);
/* Fills up to `max` members of `bond`; returns how many there are (negative on error). */
int ts_bond_members(uint16_t bond, struct ts_bond_member *out, int max);
#endif
