#include <rte_config.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_cycles.h>
#include <rte_pause.h>
#include <string.h>
#include <errno.h>
#include <rte_eth_bond.h>
#include <rte_eth_bond_8023ad.h>
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

int ts_bond_mode(uint16_t bond) { return rte_eth_bond_mode_get(bond); }

int ts_bond_primary_get(uint16_t bond) { return rte_eth_bond_primary_get(bond); }

int ts_bond_primary_set(uint16_t bond, uint16_t member) { return rte_eth_bond_primary_set(bond, member); }

/* Driver-side ethdev API (exported with the INTERNAL version; ethdev_driver.h is not
 * installed by Debian's libdpdk-dev): the device is only passed through. */
struct rte_eth_dev;
struct rte_eth_dev *rte_eth_dev_allocated(const char *name);
int rte_eth_dev_callback_process(struct rte_eth_dev *dev, enum rte_eth_event_type event, void *ret_param);

int ts_link_event(uint16_t port)
{
    char name[RTE_ETH_NAME_MAX_LEN];
    if (rte_eth_dev_get_name_by_port(port, name) != 0)
        return -ENODEV;
    struct rte_eth_dev *dev = rte_eth_dev_allocated(name);
    if (dev == NULL)
        return -ENODEV;
    /* The result is the last callback's own (the bonding PMD's is -1 when, say, the link
     * did not change after all); what each callback did is visible in the bond's state. */
    (void)rte_eth_dev_callback_process(dev, RTE_ETH_EVENT_INTR_LSC, NULL);
    return 0;
}

int ts_bond_members(uint16_t bond, struct ts_bond_member *out, int max)
{
    uint16_t members[RTE_MAX_ETHPORTS];
    uint16_t active[RTE_MAX_ETHPORTS];
    int mode = rte_eth_bond_mode_get(bond);
    if (mode < 0)
        return mode;
    int n = rte_eth_bond_slaves_get(bond, members, RTE_MAX_ETHPORTS);
    if (n < 0)
        return n;
    int na = rte_eth_bond_active_slaves_get(bond, active, RTE_MAX_ETHPORTS);
    for (int i = 0; i < n && i < max; i++) {
        struct ts_bond_member *m = &out[i];
        memset(m, 0, sizeof(*m));
        m->port_id = members[i];
        for (int j = 0; j < na; j++)
            if (active[j] == members[i])
                m->active = 1;
        if (mode == BONDING_MODE_8023AD) {
            struct rte_eth_bond_8023ad_slave_info info;
            if (rte_eth_bond_8023ad_slave_info(bond, members[i], &info) == 0) {
                m->actor_state = info.actor_state;
                m->partner_state = info.partner_state;
                m->selected = info.selected;
                m->agg_port_id = info.agg_port_id;
                memcpy(m->partner_system, info.partner.system.addr_bytes, 6);
            }
        }
    }
    return n;
}
